"""ethlink.analysis: every quantity derived from a trace is checked against what the
engine itself counted (summary.json): per-message post/finish/completion times, goodput,
queue high-water marks, PFC pause time and frame counts.

The runs are small stars that lose frames (raw drops, RoCE go-back-N, READ re-issue) or
pause (PFC), so the derivations are exercised where they are hard.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import ethlink
from ethlink import analysis as A
from ethlink import collectives as C
from ethlink import replay as R
from ethlink import trace as T
from ethlink.cli import _clean_nan, write_json_atomic
from ethlink.sim import Simulation


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
    sim = Simulation(sc, trace=level, workload=workload)
    md = R.replay_metadata(sim, workload) if workload is not None else T.simulation_metadata(sim)
    with T.TraceWriter(outdir / "trace.arrow", md, engine=sim.engine, trace_filter=trace_filter) as w:
        res = sim.run(trace_sink=w.write)
    summary = _clean_nan(res.summary)
    write_json_atomic(outdir / "summary.json", summary)
    return outdir / "trace.arrow", summary


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
        assert fl[key].to_pylist() == [f[key] for f in s["flows"]], key
    got = fl["slowdown"].to_pylist()
    for g, f in zip(got, s["flows"]):
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
    for p in s["ports"]:
        for pr, hwm in enumerate(p["queue_hwm_bytes"]):
            m = (port == p["port"]) & (prio == pr)
            assert (qb[m].max() if m.any() else 0) == hwm, (p["port"], pr)
            checked += hwm > 0
    assert checked >= 5
    top = A.top_queues(path, n=3)
    assert top["max_qbytes"].to_pylist() == sorted(top["max_qbytes"].to_pylist(), reverse=True)
    assert top["max_qbytes"][0].as_py() == max(max(p["queue_hwm_bytes"]) for p in s["ports"])
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
    reads = [f["complete_ps"] - f["start_ps"] for f in s["flows"] if f["verb"] == "read"]
    assert lat["p50_ps"][0].as_py() == pytest.approx(float(np.percentile(reads, 50)))
    assert lat["p99_9_ps"][0].as_py() <= lat["max_ps"][0].as_py() == max(reads)
    by_src = A.latency_percentiles(path, by="src")
    assert sum(by_src["count"].to_pylist()) == s["flows_completed"]


def test_pandas_and_duckdb(runs):
    path, s = runs["write"]
    df = A.flows(path).to_pandas()
    assert list(df["fct_ps"]) == [f["fct_ps"] for f in s["flows"]]
    duckdb = pytest.importorskip("duckdb")
    t = T.read_trace(path)                              # noqa: F841 (DuckDB finds it by name)
    got = duckdb.sql("""SELECT port, prio, max(qbytes) AS m FROM t
                        WHERE event IN ('enqueue', 'tx_start', 'mark', 'drop') AND port >= 0
                        GROUP BY port, prio ORDER BY port, prio""").fetchall()
    hwm = {(p["port"], pr): v for p in s["ports"] for pr, v in enumerate(p["queue_hwm_bytes"])}
    assert got and all(m == hwm[(p, pr)] for p, pr, m in got)
    fl = A.flows(path)                                  # noqa: F841
    [(n,)] = duckdb.sql("SELECT count(*) FROM fl WHERE complete_ps IS NOT NULL").fetchall()
    assert n == s["flows_completed"]


def test_filtered_trace_takes_times_from_the_summary(tmp_path):
    sc = ethlink.Scenario.from_dict(SCENARIOS["write"])
    path, s = run_to(tmp_path, sc, "hop", trace_filter=T.TraceFilter(events=("tx_start",)))
    fl = A.flows(path)                                  # auto: summary.json beside the trace
    assert fl["complete_ps"].to_pylist() == [f["complete_ps"] for f in s["flows"]]
    (tmp_path / "summary.json").unlink()
    with pytest.raises(T.TraceError, match="filtered.*need its summary.json"):
        A.flows(path)
    assert A.flows(path, summary=s)["fct_ps"].to_pylist() == [f["fct_ps"] for f in s["flows"]]


def test_dependent_post_times_from_the_trace(tmp_path):
    """A replayed ring all-reduce: post times of dependent ops are derived from their
    dependency's completion found in the trace."""
    sc = R.fabric_scenario(star(topology={"kind": "star", "hosts": 4, "rate": "100G"}, switch={"buffer": "1MiB"}))
    wl = C.ring_allreduce(4, 50000, op="raw", step_gap_ps=777)
    path, s = run_to(tmp_path, sc, "endpoints", workload=wl)
    (tmp_path / "summary.json").unlink()
    fl = A.flows(path, source="trace")
    assert fl["start_ps"].to_pylist() == [f["start_ps"] for f in s["flows"]]
    assert fl["dep"].to_pylist() == wl["dep"].to_pylist()
    assert len(set(fl["start_ps"].to_pylist())) == 2 * (4 - 1)     # one post time per step
