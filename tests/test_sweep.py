"""`ethlink sweep`: the grid syntax, determinism across worker processes (every point equals
a separate `ethlink run` with the same overrides; --jobs 1 and 2 write the same files),
validation before any run, the partitioned trace dataset, an interrupted sweep, and the
same sweep on a Dask distributed LocalCluster (Dask is in the test extras)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ethlink import sweep as S
from ethlink import tables as T
from ethlink.cli import main
from ethlink.trace import read_trace

# A 4:1 raw incast into a small buffer: cheap, and the grid changes drops and FCTs.
BASE = ["--set", "workload.0.senders=4", "--set", "switch.buffer=160KiB"]
GRID = ["--grid", "workload.0.size=16KiB,48KiB", "--grid", "switch.cut_through=false,true"]
METRICS = ["events", "bytes_delivered", "drops", "fct_ps.max", "flows_completed", "packet_hops",
           "ports.0.tx_bytes", "flows.-1.fct_ps"]
WALL_CLOCK = ("wall_s", "events_per_s")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The same 2x2 sweep with a hop trace, on 2 worker processes and on 1."""
    outs = {}
    for jobs in (2, 1):
        out = tmp_path_factory.mktemp(f"jobs{jobs}")
        r = invoke("sweep", "incast-raw", "-o", out, *BASE, *GRID, "--jobs", jobs, "--trace", "hop",
                   "--metric", ",".join(METRICS), "--quiet")
        assert r.exit_code == 0, r.output
        outs[jobs] = out
    return outs


def test_split_values_respects_brackets_and_quotes():
    assert S.split_values('ethlink,roce') == ["ethlink", "roce"]
    assert S.split_values('"a,b", c') == ['"a,b"', "c"]
    assert S.split_values("[64,128],[256]") == ["[64,128]", "[256]"]
    assert S.split_values("{load = 0.5, store = 0.5},{store = 1.0}") == \
        ["{load = 0.5, store = 0.5}", "{store = 1.0}"]


@pytest.mark.parametrize("item,key,values", [
    ("topology.hosts=8,16", "topology.hosts", [8, 16]),
    ("ls.header=ethlink,roce", "ls.header", ["ethlink", "roce"]),
    ('ls.header="ethlink","roce"', "ls.header", ["ethlink", "roce"]),
    ("topology.rate=100G,400G", "topology.rate", ["100G", "400G"]),
    ("loadstore.0.sizes=[64],[128,256]", "loadstore.0.sizes", [[64], [128, 256]]),
    ("switch.cut_through=true,false", "switch.cut_through", [True, False]),
    ("link.ber=0,1e-6", "link.ber", [0, 1e-6]),
])
def test_grid_values_are_read_as_set_reads_them(item, key, values):
    assert S.parse_grid_item(item) == (key, values)
    for v in values:
        assert S.parse_value(S.toml_literal(v)) == v


@pytest.mark.parametrize("item,needle", [
    ("topology.hosts", "expected KEY=V1,V2"),
    ("topology.hosts=8,,16", "value 2"),
    ("seed=1,2", "--seeds"),
])
def test_bad_grid_syntax(item, needle):
    with pytest.raises(S.SweepError, match=needle):
        S.parse_grid_item(item)


def test_points_equal_separate_runs(swept, tmp_path):
    """Each row of sweep.csv and each point's summary.json equal what `ethlink run` gives for
    the same overrides (the engine is deterministic across processes)."""
    table = pq.read_table(swept[2] / "sweep.parquet")
    assert table.num_rows == 4
    assert table.column_names[:5] == ["point", "name", "workload.0.size", "switch.cut_through", "seed"]
    assert table.column_names[5:] == METRICS
    rows = table.to_pylist()
    assert [(r["workload.0.size"], r["switch.cut_through"]) for r in rows] == \
        [("16KiB", False), ("16KiB", True), ("48KiB", False), ("48KiB", True)]
    for r in rows:
        out = tmp_path / f"run{r['point']}"
        res = invoke("run", "incast-raw", "-o", out, *BASE, "--set", f"workload.0.size={r['workload.0.size']}",
                     "--set", f"switch.cut_through={str(r['switch.cut_through']).lower()}", "--quiet")
        assert res.exit_code == 0, res.output
        alone = json.loads((out / "summary.json").read_text())
        point = json.loads((swept[2] / r["name"] / "summary.json").read_text())
        for k in WALL_CLOCK:
            alone.pop(k), point.pop(k)
        assert point == alone
        for m in METRICS:
            assert r[m] == S.metric_value(alone, m, lambda name: pq.read_table(out / f"{name}.parquet")), m
        for name in ("flows", "qps", "ports"):
            assert pq.read_table(out / f"{name}.parquet").equals(
                pq.read_table(swept[2] / r["name"] / f"{name}.parquet")), name
    # the grid matters: the big incast drops into the small buffer, the small one does not
    assert rows[0]["drops"] == 0 and rows[2]["drops"] > 0
    assert rows[0]["drops"] == sum(json.loads((swept[2] / rows[0]["name"] / "summary.json").read_text())
                                   ["drops"].values())


def test_jobs_1_and_2_write_the_same_files(swept):
    assert (swept[1] / "sweep.csv").read_bytes() == (swept[2] / "sweep.csv").read_bytes()
    assert pq.read_table(swept[1] / "sweep.parquet").equals(pq.read_table(swept[2] / "sweep.parquet"))
    for name in pq.read_table(swept[1] / "sweep.parquet")["name"].to_pylist():
        assert (swept[1] / name / "trace.arrow").read_bytes() == (swept[2] / name / "trace.arrow").read_bytes()


def test_traces_dataset_has_one_partition_per_point(swept):
    out = swept[2]
    points = pq.read_table(out / "sweep.parquet").to_pylist()
    assert sorted(p.name for p in (out / "traces").iterdir()) == sorted(f"point={r['point']}" for r in points)
    dataset = ds.dataset(out / "traces", format="parquet", partitioning="hive")
    assert dataset.schema.field("point").type == pa.int32()
    for r in points:
        trace = read_trace(out / r["name"] / "trace.arrow")
        part = dataset.to_table(filter=pc.field("point") == r["point"])
        assert trace.num_rows > 0
        assert part.num_rows == trace.num_rows
        assert part.column("time_ps").equals(trace.column("time_ps"))
        assert part.column("event").cast(pa.string()).equals(trace.column("event").cast(pa.string()))
    assert dataset.count_rows() == sum(read_trace(out / r["name"] / "trace.arrow").num_rows for r in points)


@pytest.mark.parametrize("args,needle", [
    (["--grid", "switch.cut_through=false,true", "--grid", "switch.bufer=1MiB,2MiB"], "switch.bufer"),
    (["--grid", "switch.threshold=static,dymanic"], "switch.threshold"),
    (["--grid", "workload.3.size=1KiB,2KiB"], "index 3 out of range"),
    (["--grid", "switch.cut_through=false,true", "--metric", "fct_ps.p98"], "fct_ps.p98"),
    (["--metric", "flows.fct_ps"], "name a cell as flows.ROW.COLUMN"),
    (["--metric", "ports.0.tx_byte"], "ports has no column 'tx_byte'"),
    (["--seeds", "1,x"], "--seeds"),
])
def test_bad_input_fails_before_any_run(tmp_path, args, needle):
    """Every point is validated (the bad value is at the second point) before any runs:
    nothing is written."""
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["sweep", "incast-raw", "-o", str(out), *BASE, *args, "--quiet"])
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert not out.exists()


def test_interrupted_sweep_keeps_whole_points(tmp_path):
    """A KeyboardInterrupt after the first finished point: the workers are killed, and
    OUTDIR holds exactly the points of sweep.csv, each with its summary, a complete trace
    and its partition."""
    out = tmp_path / "o"
    seen = []

    def stop(point, result):
        seen.append(point.index)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        S.sweep("incast-raw", out, {"workload.0.size": ["256KiB", "512KiB", "768KiB", "1MiB"]},
                sets=["workload.0.senders=8"], seeds=[1, 2], jobs=2, trace="hop", on_point=stop)
    rows = pq.read_table(out / "sweep.parquet").to_pylist()
    assert seen and seen[0] in [r["point"] for r in rows] and len(rows) < 8
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "traces") == sorted(r["name"] for r in rows)
    assert sorted(p.name for p in (out / "traces").iterdir()) == sorted(f"point={r['point']}" for r in rows)
    for r in rows:
        s = json.loads((out / r["name"] / "summary.json").read_text())
        assert s["stop"] == "empty"
        trace = read_trace(out / r["name"] / "trace.arrow")
        assert trace.schema.metadata[b"complete"] == b"true"
        assert pq.read_table(out / r["name"] / "flows.parquet").num_rows == s["flows_total"]
    assert (out / "sweep.csv").read_text().count("\n") == len(rows) + 1


def test_python_api_and_metric_values(tmp_path):
    t = S.sweep("ls-idle", tmp_path / "o", {"ls.target_latency": ["100ns", "200ns"]}, jobs=1,
                metrics=["ls.max_ps", "ls.by_kind.load.p50_ps", "drops", "ls.count"])
    rows = t.to_pylist()
    assert [r["ls.target_latency"] for r in rows] == ["100ns", "200ns"]
    # a load waits at the target once: +100 ns of memory latency
    assert rows[1]["ls.by_kind.load.p50_ps"] - rows[0]["ls.by_kind.load.p50_ps"] == 100_000
    assert all(r["drops"] == 0 and r["ls.count"] == 6 for r in rows)
    assert S.metric_value({"drops": {"buffer_full": 3, "ttl": 2}}, "drops") == 5
    assert S.metric_value({"drops": {"ttl": 2}}, "drops.buffer_full") == 0
    assert S.metric_value({"ls": None}, "ls.p99_ps") is None
    flows = {"flows": T.table({"fct_ps": np.array([7, 9]), "verb": ["raw", "read"]})}.__getitem__
    assert S.metric_value({}, "flows.0.fct_ps", flows) == 7
    assert S.metric_value({}, "flows.-1.verb", flows) == "read"
    assert S.metric_value({}, "flows.2.fct_ps", flows) is None
    assert S.metric_value({}, "flows.0.nope", flows) is None


@pytest.fixture(scope="module")
def dask_cluster():
    """A Dask distributed cluster in this process (a scheduler and 2 single-thread workers,
    no dashboard): the engine `ethlink sweep --scheduler` talks to, started in about a second."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        yield cluster


def test_dask_cluster_gives_the_local_pool_results_point_by_point(tmp_path, dask_cluster):
    """The same sweep on the local process pool and on a Dask LocalCluster: the same points,
    each with the same metrics, summary.json and tables."""
    grid = {"workload.0.size": ["16KiB", "48KiB"], "switch.cut_through": [False, True]}
    sets = ["workload.0.senders=4", "switch.buffer=160KiB"]
    local = S.sweep("incast-raw", tmp_path / "local", grid, sets=sets, jobs=2, metrics=METRICS)
    remote = S.sweep("incast-raw", tmp_path / "dask", grid, sets=sets, metrics=METRICS,
                     scheduler=dask_cluster.scheduler_address)
    assert remote.num_rows == local.num_rows == 4
    assert remote.column_names == local.column_names and "error" not in local.column_names
    for a, b in zip(local.to_pylist(), remote.to_pylist()):
        assert a["name"] == b["name"]
        for m in METRICS:
            assert a[m] == b[m], (a["name"], m)
        here = json.loads((tmp_path / "local" / a["name"] / "summary.json").read_text())
        there = json.loads((tmp_path / "dask" / b["name"] / "summary.json").read_text())
        for k in WALL_CLOCK:
            here.pop(k), there.pop(k)
        assert here == there, a["name"]
        for name in ("flows", "qps", "ports"):
            assert pq.read_table(tmp_path / "local" / a["name"] / f"{name}.parquet").equals(
                pq.read_table(tmp_path / "dask" / b["name"] / f"{name}.parquet")), (a["name"], name)
    # the grid matters, so equal tables are not equal by accident
    assert len(set(local["drops"].to_pylist())) > 1
    assert remote.equals(local)


def test_a_point_failing_on_a_dask_worker_comes_back_with_its_error(tmp_path, dask_cluster):
    """A point whose directory cannot be made fails on its worker: sweep() finishes the
    others, writes sweep.csv with that point's error and raises SweepFailed naming it."""
    grid = {"workload.0.size": ["4KiB", "8KiB"]}
    sets = ["workload.0.senders=2"]
    out = tmp_path / "o"
    points = S.plan("incast-raw", grid, sets=sets)
    out.mkdir()
    (out / points[1].name).write_text("in the way")
    with pytest.raises(S.SweepFailed) as info:
        S.sweep("incast-raw", out, grid, sets=sets, scheduler=dask_cluster.scheduler_address)
    assert list(info.value.errors) == [points[1].name]
    assert points[1].name in info.value.errors[points[1].name]      # the error names what failed
    rows = pq.read_table(out / "sweep.parquet").to_pylist()
    assert [bool(r["error"]) for r in rows] == [False, True]
    assert rows[1]["error"] == info.value.errors[points[1].name]
    assert json.loads((out / points[0].name / "summary.json").read_text())["stop"] == "empty"


def test_scheduler_without_dask_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_dask(name, *a, **k):
        if name.startswith("dask"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    r = CliRunner().invoke(main, ["sweep", "ls-idle", "-o", str(tmp_path / "o"), "--grid", "ls.tags=1,2",
                                  "--scheduler", "tcp://127.0.0.1:8786"])
    assert r.exit_code == 2 and "pip install 'ethlink[sweep]'" in r.output
    assert not (tmp_path / "o").exists()


def test_help_lists_sweep():
    r = invoke("--help")
    assert "sweep" in r.output
    r = invoke("sweep", "--help")
    for opt in ("--grid", "--seeds", "--jobs", "--metric", "--trace", "--scheduler", "--set"):
        assert opt in r.output
