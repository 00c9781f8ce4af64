"""ethlink.analysis: every quantity derived from a trace is checked against what the
engine itself counted (summary.json): per-message post/finish/completion times, goodput,
queue high-water marks, PFC pause time and frame counts, and Load/Store latency (per
operation against the engine's LsOp table, per kind against summary.json's `ls`).

The runs are small stars that lose frames (raw drops, RoCE go-back-N, READ re-issue) or
pause (PFC), so the derivations are exercised where they are hard; the Load/Store runs
are shrunk built-in scenarios (ls-idle, ls-under-rdma, ls-efficiency, ethlink-mixed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ethlink
from ethlink import analysis as A
from ethlink import collectives as C
from ethlink import replay as R
from ethlink import scenarios
from ethlink import trace as T
from ethlink.cli import _clean_nan, write_json_atomic
from ethlink.scenario import LS_KINDS
from ethlink.sim import Simulation
from test_scenarios_ethlink import el_frames, op_latency, star_hops


def star(**extra):
    d = {"name": "an", "seed": 3, "topology": {"kind": "star", "hosts": 5, "rate": "100G", "delay": "100ns"},
         "switch": {"buffer": "64KiB", "threshold": "static"}, "run": {"trace_capacity": 2048}}
    d.update(extra)
    return d


def roce(verb, **kw):
    return {"transport": "roce", "verb": verb, **kw}


SCENARIOS = {
    # 64 KiB buffer, 4:1 raw incast: drops, most flows never finish
    "raw": star(workload=[{"kind": "incast", "receiver": "h0", "size": "200KiB"}]),
    # RoCE WRITE incast with drops: NAKs, go-back-N
    "write": star(workload=[{"kind": "incast", "receiver": "h0", "size": "200KiB", **roce("write")}]),
    # one requester READs from four responders (responses collide) while a WRITE runs
    "read": star(flow=[{"src": 0, "dst": k, "size": 204800, **roce("read")} for k in (1, 2, 3, 4)]
                 + [{"src": 1, "dst": 0, "size": 50000, **roce("send")}]),
    # PFC on priority 3: pauses instead of drops
    "pfc": star(switch={"buffer": "1MiB"}, pfc={"enabled": True, "priorities": [3]},
                workload=[{"kind": "incast", "receiver": "h0", "size": "300KiB", "prio": 3, **roce("write")}]),
}
LEVEL = {"raw": "hop", "write": "hop", "read": "endpoints", "pfc": "hop"}


def run_to(outdir: Path, sc, level="hop", workload=None, trace_filter=None):
    path, summary, _ = run_res(outdir, sc, level, workload, trace_filter)
    return path, summary


def rows_of(path: Path, name: str) -> list[dict]:
    """The rows of the run's flows, qps or ports table, beside its trace at `path`."""
    return pq.read_table(Path(path).parent / f"{name}.parquet").to_pylist()


def run_res(outdir: Path, sc, level="hop", workload=None, trace_filter=None):
    """Run `sc` with a trace to OUTDIR/trace.arrow, its tables and OUTDIR/summary.json, as
    `ethlink run` does: (trace path, summary, Result)."""
    sim = Simulation(sc, trace=level, workload=workload)
    md = R.replay_metadata(sim, workload) if workload is not None else T.simulation_metadata(sim)
    with T.TraceWriter(outdir / "trace.arrow", md, engine=sim.engine, trace_filter=trace_filter) as w:
        res = sim.run(trace_sink=w.write)
    res.write_tables(outdir)
    summary = _clean_nan(res.summary)
    write_json_atomic(outdir / "summary.json", summary)
    return outdir / "trace.arrow", summary, res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for name, d in SCENARIOS.items():
        out[name] = run_to(tmp_path_factory.mktemp(name), ethlink.Scenario.from_dict(d), LEVEL[name])
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_flows_from_the_trace_equal_the_engines(runs, name):
    path, s = runs[name]
    fl = A.flows(path, source="trace")
    assert fl.num_rows == s["flows_total"]
    for key in ("start_ps", "finish_ps", "complete_ps", "fct_ps", "ideal_fct_ps"):
        assert fl[key].to_pylist() == [f[key] for f in rows_of(path, "flows")], key
    got = fl["slowdown"].to_pylist()
    for g, f in zip(got, rows_of(path, "flows")):
        assert (g is None and f["slowdown"] is None) or g == pytest.approx(f["slowdown"], rel=1e-12)
    done = fl["finish_ps"].is_valid().to_numpy(zero_copy_only=False)
    assert np.array_equal(fl["delivered_bytes"].to_numpy()[done], fl["bytes"].to_numpy()[done])
    assert int(pa.compute.sum(fl["delivered_bytes"]).as_py()) == s["bytes_delivered"]


def test_the_runs_exercise_loss_and_recovery(runs):
    assert runs["raw"][1]["flows_completed"] < runs["raw"][1]["flows_total"]
    assert runs["write"][1]["retransmitted_packets"] > 0 and runs["write"][1]["naks"] > 0
    assert runs["read"][1]["drops"] and runs["read"][1]["retransmitted_packets"] > 0
    assert runs["pfc"][1]["pfc_pause_frames"] > 0 and not runs["pfc"][1]["drops"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_goodput_sums_to_bytes_delivered(runs, name):
    path, s = runs[name]
    g = A.goodput(path, bins=37)
    assert g.num_rows == 37
    width = g["bin_ps"][0].as_py()
    assert width == -(-s["sim_time_ps"] // 37)
    assert int(pa.compute.sum(g["bytes"]).as_py()) == s["bytes_delivered"]
    assert np.allclose(g["goodput_bps"].to_numpy(), g["bytes"].to_numpy() * 8e12 / width)
    ft = A.flow_throughput(path, bin_ps=width)
    per_flow = np.bincount(ft["flow"].to_numpy(), weights=ft["bytes"].to_numpy(), minlength=s["flows_total"])
    assert per_flow.astype(np.int64).tolist() == A.flows(path)["delivered_bytes"].to_pylist()


@pytest.mark.parametrize("name", ["raw", "write", "pfc"])
def test_queue_depth_peaks_are_the_high_water_marks(runs, name):
    """At hop level every queue change is traced: the deepest sample of each (port,
    prio) is the engine's high-water mark."""
    path, s = runs[name]
    qd = A.queue_depth(path)
    port, prio, qb = (qd[c].to_numpy() for c in ("port", "prio", "qbytes"))
    checked = 0
    for p in rows_of(path, "ports"):
        for pr, hwm in enumerate(p["queue_hwm_bytes"]):
            m = (port == p["port"]) & (prio == pr)
            assert (qb[m].max() if m.any() else 0) == hwm, (p["port"], pr)
            checked += hwm > 0
    assert checked >= 5
    top = A.top_queues(path, n=3)
    assert top["max_qbytes"].to_pylist() == sorted(top["max_qbytes"].to_pylist(), reverse=True)
    assert top["max_qbytes"][0].as_py() == max(max(p["queue_hwm_bytes"]) for p in rows_of(path, "ports"))
    assert top["name"][0].as_py() == "sw0:0 -> h0:0"


def test_pause_time_equals_the_engines(runs):
    path, s = runs["pfc"]
    pt = A.pause_time(path)
    paused = pt.filter(pa.compute.greater(pt["paused_ps"], 0))
    assert paused.num_rows == 4                      # the four senders' NIC queues, prio 3
    assert set(paused["prio"].to_pylist()) == {3}
    assert pt["paused_ps"].to_pylist() == pt["summary_paused_ps"].to_pylist()
    assert sum(pt["pause_frames_tx"].to_pylist()) == s["pfc_pause_frames"]
    assert sum(pt["pause_frames_rx"].to_pylist()) == s["pfc_pause_frames_received"]
    assert sum(pt["paused_ps"].to_pylist()) == s["paused_time_ps"]
    iv = A.pause_intervals(path).to_pandas()
    assert (iv["end_ps"] > iv["start_ps"]).all()
    for _, g in iv.groupby(["port", "prio"]):
        assert (g["start_ps"].to_numpy()[1:] >= g["end_ps"].to_numpy()[:-1]).all()   # no overlap
    assert A.pause_time(runs["raw"][0]).num_rows == 0


def test_latency_percentiles(runs):
    path, s = runs["read"]
    fl = A.flows(path)
    lat = A.latency_percentiles(fl)
    assert lat["op"].to_pylist() == ["read", "send"]
    assert lat["count"].to_pylist() == [4, 1]
    reads = [f["complete_ps"] - f["start_ps"] for f in rows_of(path, "flows") if f["verb"] == "read"]
    assert lat["p50_ps"][0].as_py() == pytest.approx(float(np.percentile(reads, 50)))
    assert lat["p99_9_ps"][0].as_py() <= lat["max_ps"][0].as_py() == max(reads)
    by_src = A.latency_percentiles(path, by="src")
    assert sum(by_src["count"].to_pylist()) == s["flows_completed"]


def test_pandas_and_duckdb(runs):
    path, s = runs["write"]
    df = A.flows(path).to_pandas()
    assert list(df["fct_ps"]) == [f["fct_ps"] for f in rows_of(path, "flows")]
    duckdb = pytest.importorskip("duckdb")
    t = T.read_trace(path)                              # noqa: F841 (DuckDB finds it by name)
    got = duckdb.sql("""SELECT port, prio, max(qbytes) AS m FROM t
                        WHERE event IN ('enqueue', 'tx_start', 'mark', 'drop') AND port >= 0
                        GROUP BY port, prio ORDER BY port, prio""").fetchall()
    hwm = {(p["port"], pr): v for p in rows_of(path, "ports") for pr, v in enumerate(p["queue_hwm_bytes"])}
    assert got and all(m == hwm[(p, pr)] for p, pr, m in got)
    fl = A.flows(path)                                  # noqa: F841
    [(n,)] = duckdb.sql("SELECT count(*) FROM fl WHERE complete_ps IS NOT NULL").fetchall()
    assert n == s["flows_completed"]


def test_filtered_trace_takes_times_from_the_results_table(tmp_path):
    sc = ethlink.Scenario.from_dict(SCENARIOS["write"])
    path, s = run_to(tmp_path, sc, "hop", trace_filter=T.TraceFilter(events=("tx_start",)))
    rows = rows_of(path, "flows")
    fl = A.flows(path)                                  # auto: flows.parquet beside the trace
    assert fl["complete_ps"].to_pylist() == [f["complete_ps"] for f in rows]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("summary.json", "flows.parquet"):
        (tmp_path / name).rename(elsewhere / name)
    with pytest.raises(T.TraceError, match="filtered.*need the run's flows.parquet"):
        A.flows(path)
    assert A.flows(path, summary=elsewhere / "summary.json")["fct_ps"].to_pylist() == [f["fct_ps"] for f in rows]


def test_dependent_post_times_from_the_trace(tmp_path):
    """A replayed ring all-reduce: post times of dependent ops are derived from their
    dependency's completion found in the trace."""
    sc = R.fabric_scenario(star(topology={"kind": "star", "hosts": 4, "rate": "100G"}, switch={"buffer": "1MiB"}))
    wl = C.ring_allreduce(4, 50000, op="raw", step_gap_ps=777)
    path, s = run_to(tmp_path, sc, "endpoints", workload=wl)
    (tmp_path / "summary.json").unlink()
    fl = A.flows(path, source="trace")
    assert fl["start_ps"].to_pylist() == [f["start_ps"] for f in rows_of(path, "flows")]
    assert fl["dep"].to_pylist() == wl["dep"].to_pylist()
    assert len(set(fl["start_ps"].to_pylist())) == 2 * (4 - 1)     # one post time per step


# --- Load/Store ------------------------------------------------------------------------------

LS_RUNS = {
    # one op of each kind on an idle 800G star
    "idle": ("ls-idle", [], "endpoints"),
    # 8 GPUs on 2 planes: relaxed, coalesced, fences every 100 ops, LLR replays, RDMA beside
    "mixed": ("ethlink-mixed", ["topology.hosts=8", "topology.planes=2", 'workload.0.size="16KiB"',
                                "loadstore.0.ops=300", "link.ber=1e-6"], "hop"),
    # loads and acknowledged stores in their own class under an RDMA all-to-all
    "rdma": ("ls-under-rdma", ["topology.leaves=2", 'workload.0.size="64KiB"', "loadstore.0.ops=100",
                               'loadstore.0.start="2us"'], "endpoints"),
    # posted stores over the RoCE header profile (op rows stay kind ethlink)
    "roce": ("ls-efficiency", ["loadstore.0.ops=200", 'ls.header="roce"'], "endpoints"),
}


@pytest.fixture(scope="module")
def ls_runs(tmp_path_factory):
    out = {}
    for name, (scenario, sets, level) in LS_RUNS.items():
        out[name] = run_res(tmp_path_factory.mktemp(f"ls-{name}"), scenarios.load(scenario, sets), level)
    return out


def _engine_latency(res) -> tuple[np.ndarray, np.ndarray]:
    """(kind code, complete_ps - start_ps) of the engine's completed non-fence ops, in op order."""
    o = res.ls_ops
    done = (o["kind"] != LS_KINDS.index("fence")) & (o["complete_ps"] >= 0)
    return o["kind"][done], (o["complete_ps"] - o["start_ps"])[done]


@pytest.mark.parametrize("name", list(LS_RUNS))
def test_ls_latency_equals_the_engines_summary(ls_runs, name):
    path, s, res = ls_runs[name]
    ls = s["ls"]
    lat = A.ls_latency(path)
    rows = {r["kind"]: r for r in lat.to_pylist()}
    assert lat["kind"][-1].as_py() == "all" and "fence" not in rows
    a = rows["all"]
    assert (a["completed"], a["issued"]) == (ls["count"], ls["issued"])
    assert (a["p50_ps"], a["p99_ps"], a["p99_9_ps"]) == (ls["p50_ps"], ls["p99_ps"], ls["p999_ps"])
    assert (a["min_ps"], a["max_ps"], a["mean_ps"]) == (ls["min_ps"], ls["max_ps"], ls["mean_ps"])
    kinds = [k for k in rows if k != "all"]
    assert kinds == [k for k in LS_KINDS if k in ls["by_kind"]]           # LS_KINDS order
    for k in kinds:
        want = ls["by_kind"][k]
        got = rows[k]
        assert (got["completed"], got["p50_ps"], got["p99_ps"], got["max_ps"]) == \
            (want["count"], want["p50_ps"], want["p99_ps"], want["max_ps"]), k
    assert sum(rows[k]["issued"] for k in kinds) == a["issued"]
    # the other groupings cover the same operations
    one = A.ls_latency(path, by=None)
    assert one.column_names[0] == "issued" and one.to_pylist() == [{k: v for k, v in a.items() if k != "kind"}]
    by_src = A.ls_latency(A.ls_ops(path), by="src").to_pylist()
    assert by_src[-1] == {"src": "all", **{k: v for k, v in a.items() if k != "kind"}}
    assert sum(r["completed"] for r in by_src[:-1]) == ls["count"]


def test_ls_latency_percentiles_are_the_engines_lower_ones(ls_runs):
    """On the mixed run the percentile method matters (interpolation would give other
    values), so the equality above pins method="lower"; per GPU and for other
    percentiles, the figures are numpy's over the engine's own op table."""
    path, s, res = ls_runs["mixed"]
    kind, lat = _engine_latency(res)
    assert any(np.percentile(lat[kind == k], q) != np.percentile(lat[kind == k], q, method="lower")
               for k in np.unique(kind) for q in (50, 99))
    got = A.ls_latency(path, by="src", percentiles=(10, 75, 99.99))
    assert got.column_names[:6] == ["src", "issued", "completed", "mean_ps", "p10_ps", "p75_ps"]
    o = res.ls_ops
    fab = Simulation(res.scenario).compiled.fabric
    assert got["src"].to_pylist() == [fab.names[n] for n in fab.hosts] + ["all"] == [f"h{i}" for i in range(8)] + ["all"]
    for g, row in enumerate(got.to_pylist()[:-1]):
        sel = (o["src"] == g) & (o["kind"] != LS_KINDS.index("fence")) & (o["complete_ps"] >= 0)
        x = (o["complete_ps"] - o["start_ps"])[sel]
        assert row["completed"] == len(x) and row["mean_ps"] == x.mean()
        for q in (10, 75, 99.99):
            assert row[f"p{q:g}_ps".replace(".", "_")] == int(np.percentile(x, q, method="lower"))
    by_dst = A.ls_latency(path, by="dst")
    assert sum(by_dst["issued"].to_pylist()[:-1]) == s["ls"]["issued"]


@pytest.mark.parametrize("name", list(LS_RUNS))
def test_ls_ops_equal_the_engines_op_table(ls_runs, name):
    path, s, res = ls_runs[name]
    o = res.ls_ops
    ops = A.ls_ops(path)
    issued = np.nonzero(o["start_ps"] >= 0)[0]
    assert ops["op"].to_pylist() == issued.tolist()
    o = o[issued]
    done = o["complete_ps"] >= 0

    def nullable(a):
        return [int(v) if d else None for v, d in zip(a, done)]

    assert ops["issue_ps"].to_pylist() == o["start_ps"].tolist()
    assert ops["complete_ps"].to_pylist() == nullable(o["complete_ps"])
    assert ops["latency_ps"].to_pylist() == nullable(o["complete_ps"] - o["start_ps"])
    assert ops["kind"].to_pylist() == [LS_KINDS[k] for k in o["kind"]]
    assert ops["src_index"].to_pylist() == o["src"].tolist()
    assert ops["dst_index"].to_pylist() == o["dst"].tolist()
    assert ops["bytes"].to_pylist() == o["size"].tolist()
    assert set(ops["prio"].to_pylist()) == {res.scenario.ls.prio}     # the Load/Store traffic class
    fab = Simulation(res.scenario).compiled.fabric
    host_names = [fab.names[n] for n in fab.hosts]
    assert ops["src"].to_pylist() == [host_names[i] for i in o["src"]]
    assert ops["dst"].to_pylist() == [host_names[i] for i in o["dst"]]
    fence = o["kind"] == LS_KINDS.index("fence")
    assert (name == "mixed") == bool(fence.any())
    assert (o["src"][fence] == o["dst"][fence]).all() and (o["size"][fence] == 0).all()


def test_ls_idle_latency_is_the_analytic_value(ls_runs):
    """On the idle fabric each op's traced latency is the analytic sum of
    tests/test_scenarios_ethlink.py (serialization, propagation, switch, NIC and memory
    latencies both ways)."""
    path, s, res = ls_runs["idle"]
    sc = res.scenario
    hops = star_hops(sc)
    want = [op_latency(o["kind"], o["size"], el_frames, hops, hops, sc.ls.target_latency_ps) for o in sc.ls_ops]
    ops = A.ls_ops(path)
    assert ops["kind"].to_pylist() == [o["kind"] for o in sc.ls_ops]
    assert ops["latency_ps"].to_pylist() == want
    assert ops["issue_ps"].to_pylist() == [o["time_ps"] for o in sc.ls_ops]      # a free tag at once
    load = A.ls_latency(ops).to_pylist()[0]
    assert load["kind"] == "load" and (load["min_ps"], load["max_ps"]) == (want[0], want[1])
    assert load["p50_ps"] == want[0] and load["mean_ps"] == (want[0] + want[1]) / 2


def test_an_op_cut_off_by_until_has_not_completed(tmp_path):
    """ls-idle stopped at 6.2 us: the store_ack issued at 6 us is in flight (no
    op_complete row), the atomics at 8 and 10 us never issued (no rows)."""
    sc = scenarios.load("ls-idle", ['run.until="6.2us"'])
    path, s, res = run_res(tmp_path, sc, "endpoints")
    assert s["stop"] == "until" and (s["ls"]["total"], s["ls"]["issued"], s["ls"]["count"]) == (6, 4, 3)
    ops = A.ls_ops(path)
    assert ops["kind"].to_pylist() == ["load", "load", "store", "store_ack"]
    assert ops["issue_ps"][3].as_py() == 6_000_000 and res.ls_ops["complete_ps"][3] == -1
    assert ops["complete_ps"].is_null().to_pylist() == [False, False, False, True]
    assert ops["latency_ps"].is_null().to_pylist() == [False, False, False, True]
    rows = {r["kind"]: r for r in A.ls_latency(ops).to_pylist()}
    assert (rows["store_ack"]["issued"], rows["store_ack"]["completed"]) == (1, 0)
    assert rows["store_ack"]["p50_ps"] is None and rows["store_ack"]["mean_ps"] is None
    assert (rows["all"]["issued"], rows["all"]["completed"]) == (s["ls"]["issued"], s["ls"]["count"])
    assert rows["all"]["p99_9_ps"] == s["ls"]["p999_ps"]


def test_ls_needs_the_op_rows(tmp_path, runs):
    sc = scenarios.load("ls-idle")
    path, s = run_to(tmp_path / "a", sc, "endpoints", trace_filter=T.TraceFilter(events=("tx_start", "deliver")))
    with pytest.raises(T.TraceError, match="no op_issue or op_complete rows.*filtered to events tx_start, deliver"):
        A.ls_ops(path)
    with pytest.raises(T.TraceError, match="no op_issue or op_complete rows"):
        A.ls_latency(path)
    path, s = run_to(tmp_path / "b", sc, "endpoints", trace_filter=T.TraceFilter(events=("op_issue",)))
    with pytest.raises(T.TraceError, match="has no op_complete rows"):
        A.ls_ops(path)
    path, s = run_to(tmp_path / "c", sc, "hop", trace_filter=T.TraceFilter(nodes=("sw0",)))
    with pytest.raises(T.TraceError, match="no Load/Store op_issue/op_complete rows"):
        A.ls_ops(path)
    # kept at the issuing GPU: every op is there
    path, s = run_to(tmp_path / "d", sc, "hop", trace_filter=T.TraceFilter(nodes=("h0",)))
    assert A.ls_latency(path)["completed"].to_pylist()[-1] == s["ls"]["count"] == 6
    # a run without Load/Store: no operations, an empty "all" row
    assert A.ls_ops(runs["raw"][0]).num_rows == 0
    assert A.ls_latency(runs["raw"][0]).to_pylist() == [
        {"kind": "all", "issued": 0, "completed": 0, "mean_ps": None, "p50_ps": None, "p90_ps": None,
         "p99_ps": None, "p99_9_ps": None, "min_ps": None, "max_ps": None}]
    with pytest.raises(ValueError, match="by 'op'"):
        A.ls_latency(runs["raw"][0], by="op")


def test_ls_ops_in_duckdb(ls_runs):
    duckdb = pytest.importorskip("duckdb")
    path, s, res = ls_runs["mixed"]
    ops = A.ls_ops(path)                                # noqa: F841 (DuckDB finds it by name)
    got = duckdb.sql("""SELECT kind, count(*) AS n, count(latency_ps) AS done, min(latency_ps), max(latency_ps),
                               avg(latency_ps) FROM ops WHERE kind <> 'fence' GROUP BY kind ORDER BY kind""").fetchall()
    want = {r["kind"]: r for r in A.ls_latency(path).to_pylist()}
    assert got and len(got) == len(want) - 1
    for kind, n, done, lo, hi, mean in got:
        w = want[kind]
        assert (n, done, lo, hi) == (w["issued"], w["completed"], w["min_ps"], w["max_ps"])
        assert mean == pytest.approx(w["mean_ps"], rel=1e-12)
        assert done == s["ls"]["by_kind"][kind]["count"]
    [(fences, zero)] = duckdb.sql("SELECT count(*), bool_and(latency_ps = 0 AND src = dst) FROM ops "
                                  "WHERE kind = 'fence'").fetchall()
    assert fences == 8 * 3 and zero                     # a fence after every 100 of 300 ops per GPU
