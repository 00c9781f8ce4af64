# ethlink: two commands for a new user, `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ethlink-installed
EXT    := ethlink/.engine-built
SRC    := $(wildcard csrc/*.pyx csrc/*.pxd csrc/*.h) setup.py csrc/pgo_train.py
PYC    := ethlink/.bytecode-built
PYSRC  := $(wildcard ethlink/*.py ethlink/*/*.py)

.PHONY: install build demo test bench clean

install: $(STAMP) $(EXT) $(PYC)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Dependencies (and the package itself, editable) are installed once, again only when
# pyproject.toml changes. setuptools' boxed "Editable installation" notice (about folders
# named like the package) is silenced: it reads like a failure to a new user.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q "cython>=3.0" "numpy>=1.26" "setuptools>=68" wheel
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install -q --no-build-isolation -e ".[test]"
	touch $@

# The Cython engine is rebuilt in place whenever a csrc/ file changes, profile-guided:
# built instrumented, trained on the built-in scenarios (csrc/pgo_train.py), built again
# with the counts (6 to 8 % faster on the incasts, within 2 % on the large permutation;
# about 37 s instead of 12). `make build PGO=0` builds it plainly, and so does any
# failure of the profiled build.
PGO    ?= 1
PGODIR := $(CURDIR)/build/pgo
$(EXT): $(SRC) | $(STAMP)
ifeq ($(PGO),1)
	rm -rf $(PGODIR)
	@( ETHLINK_PGO=generate:$(PGODIR) $(PY) setup.py -q build_ext --inplace --force \
	 && $(PY) csrc/pgo_train.py \
	 && ETHLINK_PGO=use:$(PGODIR) $(PY) setup.py -q build_ext --inplace --force ) \
	 || { echo "profile-guided build failed: building without a profile"; \
	      $(PY) setup.py -q build_ext --inplace --force; }
else
	$(PY) setup.py -q build_ext --inplace --force
endif
	touch $@

build: $(EXT)

# Bytecode is compiled once here, as pip does when it installs a package: where
# PYTHONDONTWRITEBYTECODE is set (it stops Python writing .pyc files, not reading them)
# every run would otherwise compile each module again (about 0.1 s of `ethlink run`).
$(PYC): $(PYSRC) | $(STAMP)
	$(PY) -m compileall -q ethlink
	touch $@

DEMO ?= ethlink-mixed

# The main job on the richest built-in scenario: run it with a full trace, then plot it.
demo: install
	$(VENV)/bin/ethlink run $(DEMO) -o out/demo --trace hop
	$(VENV)/bin/ethlink plot out/demo/trace.arrow -o out/demo/plots
	@echo "results: out/demo/summary.json, out/demo/trace.arrow, plots in out/demo/plots/"

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-columns=min,mean,rounds

clean:
	rm -rf build $(VENV) ethlink/*.so ethlink/.engine-built ethlink/.bytecode-built csrc/*.c *.egg-info
