"""The training run of the engine's profile-guided build (Makefile: `make build`).

The Makefile builds the extensions instrumented (gcc -fprofile-generate), runs this
script, and builds them again with the branch and call counts it recorded
(-fprofile-use). It runs the engine over every built-in scenario but the 1 M-flow
`alltoall-fattree`, and over the benchmark fabrics (the 1024-host permutation at k=8,
raw and RoCE, and the 127:1 incast), so that each protocol (PFC, CBFC, DCQCN, HPCC, UET,
LLR, Load/Store) and the large fabrics' paths are counted.

NOTE: measured on this machine class (benchmarks/README.md, "Profile-guided build"):
the 127:1 incast and incast-dcqcn 6 to 8 % faster, the 1024-host permutation within 2 %.
Adding a hop-traced run, or -fprofile-partial-training (untrained functions compiled as
without a profile), measured slower on both and no faster on traced runs. Results do not
depend on the build: tests/test_route_digests.py holds for either.

Usage: python csrc/pgo_train.py (from the repository root, after the instrumented build).
"""
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ethlink import scenarios  # noqa: E402
from ethlink.sim import Simulation  # noqa: E402

BENCH = ROOT / "benchmarks" / "scenarios"
RUNS = [(name, []) for name in scenarios.names() if name != "alltoall-fattree"] + [
    (str(BENCH / "permutation1024-fattree.toml"), ["topology.k=8"]),
    (str(BENCH / "permutation1024-fattree.toml"),
     ["topology.k=8", "workload.0.transport=roce", "workload.0.verb=write"]),
    (str(BENCH / "incast127-fattree.toml"), []),
]


def main() -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    t0 = time.perf_counter()
    events = 0
    for name, sets in RUNS:
        sim = Simulation(scenarios.load(name, sets))
        sim.run()
        events += sim.engine.events
    print(f"pgo_train: {len(RUNS)} runs, {events:,} events in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
