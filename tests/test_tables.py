"""Run results as tables (ethlink.tables, Result.table, the Parquet files beside
summary.json) and what `ethlink run` imports at start-up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ethlink import scenarios
from ethlink import tables as T
from ethlink.sim import Simulation

ETHLINK = Path(sys.executable).with_name("ethlink")
HEAVY = ("pyarrow.compute", "pandas", "scapy", "matplotlib", "ethlink.trace", "dask", "distributed")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-2**62, 2**62)), max_size=20),
       st.lists(st.one_of(st.none(), st.lists(st.integers(0, 2**40), max_size=4)), max_size=20),
       st.lists(st.one_of(st.none(), st.sampled_from(["raw", "write", "sw0"])), max_size=20))
def test_columns_round_trip_through_arrow(ints, lists, strs):
    """Every value, None and nested list comes back as it went in (pyarrow's to_pylist)."""
    for values in (ints, lists, strs):
        assert T.column(values).to_pylist() == values


def test_column_kind_from_the_types_its_values_have():
    """The kind of a list column: any list makes a list column, any str a dictionary,
    only bools a bool column, any float a float64 one, else int64 (numpy scalars alike)."""
    assert T.column([True, None, False]).type == "bool"
    assert T.column([True, 2]).to_pylist() == [1, 2]
    assert T.column([1, None, np.int32(3)]).to_pylist() == [1, None, 3]
    assert T.column([1, 2.5, None, np.float32(0.5)]).to_pylist() == [1.0, 2.5, None, 0.5]
    assert T.column([np.bool_(True), False]).type == "bool"
    assert T.column([]).type == "int64" and T.column([None]).to_pylist() == [None]
    assert str(T.column([[1], None, (2, 3)]).type) == "list<item: int64>"
    with pytest.raises(OverflowError):
        T.column([2**63])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**53), st.floats(allow_nan=False, allow_infinity=False),
                          st.floats(0, 1e3), st.sampled_from([0.0, 1.0, 2.5])), min_size=1, max_size=300),
       st.sampled_from([50, 99]))
@example([-0.0, 0, 0, -0.0, 0, 0, 1, 0, 0, 1, 0, 1, 2], 50)        # found by an explore run, session 6
def test_summary_percentiles_are_numpys(values, q):
    """summary.json's p50 and p99 (sim._percentile, which spares every run numpy.ma's
    import) are np.percentile's doubles, bit for bit, NaN and infinities too; but for a
    zero's sign: among equal -0.0 and 0.0 values numpy's partition and a sort may pick
    either (no run's metric is a negative zero)."""
    from ethlink.sim import _percentile
    x = np.asarray(values, dtype=np.float64)
    for a in (x, np.append(x, np.inf), np.append(x, -np.inf), np.append(x, np.nan)):
        with np.errstate(invalid="ignore"):             # inf - inf in numpy's interpolation
            want = float(np.percentile(a, q))
        got = _percentile(np.sort(a), q)
        assert np.array_equal(want, got, equal_nan=True), (a, q, want, got)
        assert np.signbit(want) == np.signbit(got) or want == 0, (a, q, want, got)


def test_a_2d_array_is_the_list_column_of_its_rows():
    """fixed_lists (a per-priority counter as a 2-D array) builds the same Arrow array
    as the rows given as Python lists; the ports table of a run where no port sent
    anything keeps its three key columns."""
    for a in (np.arange(24, dtype=np.int64).reshape(3, 8), np.array([[0.5, np.nan]])):
        assert T.column(a).equals(T.column(a.tolist())), a
    sim = Simulation(scenarios.load("incast-pfc", ["workload.0.start=1ms"]))
    t = sim.run(1000).table("ports")
    assert (t.num_rows, t.column_names) == (0, ["port", "node", "peer"])


def test_numpy_columns_nulls_and_nan():
    t = T.table({"a": np.array([5, -1, 0]), "b": np.array([1.5, np.nan, 0.0]), "c": np.array([True, False, True]),
                 "d": T.categorical(np.array([2, 0, 2]), ("x", "y", "z"))}, nulls=("a",))
    assert t.to_pylist() == [{"a": 5, "b": 1.5, "c": True, "d": "z"}, {"a": None, "b": None, "c": False, "d": "x"},
                             {"a": 0, "b": 0.0, "c": True, "d": "z"}]


def test_rows_table_takes_every_key_a_row_carries():
    """A key only some rows carry (a counter another module adds) is a column, null elsewhere."""
    t = T.rows_table([{"qp": 0, "x": 1}, {"qp": 1, "y": [1, 2]}], keys=("qp", "host"))
    assert t.column_names == ["qp", "host", "x", "y"]
    assert t.to_pylist()[1] == {"qp": 1, "host": None, "x": None, "y": [1, 2]}
    assert T.rows_table([], keys=("port", "node")).column_names == ["port", "node"]


@pytest.fixture(scope="module")
def dcqcn():
    """A short fairness-dcqcn run: RoCE QPs whose DCQCN rates change, PFC, ports."""
    return Simulation(scenarios.load("fairness-dcqcn", ["run.until=300us"])).run()


def test_flows_table_is_the_engines_flows(dcqcn):
    res = dcqcn
    fl, t = res.flows, res.flows_table()
    assert t.num_rows == len(fl) == res.summary["flows_total"]
    done = fl["finish_ps"] >= 0
    assert t["finish_ps"].null_count == int((~done).sum()) == res.summary["flows_total"] - res.summary["flows_completed"]
    assert t["bytes"].to_pylist() == fl["size"].tolist()
    fct = [None if f < 0 else int(f - s) for f, s in zip(fl["finish_ps"], fl["start_ps"])]
    assert t["fct_ps"].to_pylist() == fct
    assert set(t["verb"].to_pylist()) == {"write"}
    df = res.flows_df()
    assert list(df.columns) == t.column_names and len(df) == len(fl)


def test_qps_table_carries_each_qps_rate_series(dcqcn):
    res = dcqcn
    t = res.qps_table()
    s = res.rate_samples
    assert t.num_rows > 0 and len(s) > 0
    for row in t.to_pylist():
        mine = s[s[:, 1] == row["qp"]]
        assert row["rate_series_ps"] == mine[:, 0].tolist() and row["rate_series_bps"] == mine[:, 2].tolist()
        assert row["rate_samples"] == len(mine)
        assert row["rate_min_bps"] == (int(mine[:, 2].min()) if len(mine) else int(res.qps["line_bps"][row["qp"]]))
    assert sum(len(r) for r in t["rate_series_bps"].to_pylist()) == len(s)


def test_ports_table_counts_every_frame(dcqcn):
    res = dcqcn
    t = res.ports_table()
    assert sum(t["tx_frames"].to_pylist()) == res.summary["packet_hops"]
    assert sum(map(sum, t["paused_ps"].to_pylist())) == res.summary["paused_time_ps"]
    assert t["node"].to_pylist()[0] in res.summary["buffer_hwm_bytes"] or t["node"].to_pylist()[0].startswith("h")


def test_write_tables_writes_what_the_result_holds(dcqcn, tmp_path):
    paths = dcqcn.write_tables(tmp_path, on_table=lambda name: None)
    assert [p.name for p in paths] == ["flows.parquet", "qps.parquet", "ports.parquet"]
    for name in T.TABLE_NAMES:
        assert T.read_table(tmp_path, name).equals(dcqcn.table(name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows.parquet", "ports.parquet", "qps.parquet"]


def test_write_is_atomic_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "flows.parquet"
    T.write_parquet_atomic(path, T.table({"a": np.arange(3)}))
    with pytest.raises(AttributeError):
        T.write_parquet_atomic(path, "not a table")
    assert pq.read_table(path)["a"].to_pylist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["flows.parquet"]


def test_run_without_trace_imports_no_heavy_module_and_writes_tables(tmp_path):
    """`ethlink run --quiet` with tracing off: pyarrow (for the Parquet tables) but none of
    pandas, pyarrow.compute, scapy, matplotlib, ethlink.trace, nor rich (no display),
    nor numpy.ma (np.percentile imported it); summary.json stays small."""
    out = tmp_path / "o"
    code = ("import sys, runpy; sys.argv = ['ethlink'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('ethlink.cli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(' '.join(sorted(m for m in sys.modules if '.' not in m or m.startswith(('pyarrow', 'ethlink', 'numpy.ma')))))")
    p = subprocess.run([sys.executable, "-c", code, "run", "incast-pfc", "-o", str(out), "--quiet",
                        "--set", "workload.0.senders=4", "--trace", "off"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    mods = set(p.stdout.split())
    assert "ethlink.sim" in mods and "pyarrow.parquet" in mods
    assert not mods & set(HEAVY), mods & set(HEAVY)
    assert "rich" not in mods
    assert "numpy.ma" not in mods
    assert "wrote" in p.stderr
    s = json.loads((out / "summary.json").read_text())
    assert not {"flows", "qps", "ports"} & set(s)
    assert pq.read_table(out / "flows.parquet").num_rows == s["flows_total"] == 4


def test_console_script_ends_a_run_at_once_with_everything_written(tmp_path):
    """The `ethlink` script (cli.entry) skips Python's teardown after a run that wrote
    its outputs: exit 0, every file in place, the summary table (stdout) and the lines
    on stderr flushed; a bad scenario still exits 2 with its message, as Python exits."""
    out = tmp_path / "o"
    p = subprocess.run([str(ETHLINK), "run", "incast-pfc", "-o", str(out), "--set", "workload.0.senders=4"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "FCT p50" in p.stdout and p.stderr.rstrip().endswith("ports.parquet")
    assert sorted(f.name for f in out.iterdir()) == ["flows.parquet", "ports.parquet", "qps.parquet",
                                                     "summary.json"]
    assert json.loads((out / "summary.json").read_text())["flows_total"] == 4
    p = subprocess.run([str(ETHLINK), "run", "incast-pfc", "-o", str(tmp_path / "bad"), "--set", "topology.hosts=x"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "topology.hosts" in p.stderr, p.stderr
    assert not (tmp_path / "bad").exists()


def test_package_names_load_on_first_use_and_python_m_ethlink_runs(tmp_path):
    """`import ethlink` loads neither the scenario module nor numpy (the command imports
    them with the collector paused, ethlink/__main__.py); ethlink.Scenario, Simulation,
    Result and ScenarioError are there on first use; `python -m ethlink` is the command."""
    code = ("import sys, ethlink\n"
            "print('ethlink.scenario' in sys.modules, 'numpy' in sys.modules)\n"
            "from ethlink import Scenario, ScenarioError\n"
            "print(Scenario.__module__, ScenarioError.__module__, ethlink.Simulation.__module__, ethlink.Result.__name__)\n"
            "print(sorted(set(ethlink.__all__) - set(dir(ethlink))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:3] == ["False False", "ethlink.scenario ethlink.scenario ethlink.sim Result", "[]"]
    p = subprocess.run([sys.executable, "-m", "ethlink", "run", "incast-pfc", "-o", str(tmp_path / "o"), "--quiet",
                        "--set", "workload.0.senders=4"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and (tmp_path / "o" / "summary.json").exists(), p.stderr


@pytest.mark.parametrize("given, want, pool", [(None, "1", "system"), ("3", "3", "jemalloc")])
def test_command_sets_openblas_threads_and_arrow_pool_unless_told(given, want, pool):
    """The command sets OPENBLAS_NUM_THREADS=1 before numpy loads (its idle BLAS workers
    spin on a core the run needs) and makes malloc pyarrow's default pool (mimalloc's
    fresh huge pages cost the write phase a third of its time); values in the
    environment are kept, and pyarrow then uses the pool named."""
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "ARROW_DEFAULT_MEMORY_POOL")}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool
    code = ("import os, sys\nsys.argv = ['ethlink', '--version']\nimport ethlink.__main__ as m\n"
            "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
            "import pyarrow as pa\n"
            "print(os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules, pa.default_memory_pool().backend_name)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[-3:] == [want, "True", pool]


def test_command_line_imports_leave_the_writers_to_the_run():
    """Importing ethlink.cli (what every command does before it parses its arguments)
    loads neither pyarrow nor what writing summary.json takes (json, tempfile, loaded
    by a run's preload thread while the engine runs) nor importlib.resources (built-in
    scenario names only) nor rich, nor difflib (a scenario error's "did you mean")."""
    code = ("import sys, ethlink.cli\n"
            "print(' '.join(m for m in ('pyarrow', 'json', 'tempfile', 'importlib.resources', 'rich', 'numpy.ma',"
            " 'difflib')"
            " if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == []
