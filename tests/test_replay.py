"""Trace replay (ethlink.replay, `ethlink replay` / `ethlink workload`) and the collective
generators (ethlink.collectives) with the sample workloads in traces/.

The central property: the operations extracted from a traced run, replayed on the same
fabric and seed, give the same trace file, byte for byte; and a replayed workload (with
dependencies) survives its own round trip through the trace.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ethlink
from ethlink import collectives as C
from ethlink import replay as R
from ethlink import trace as T
from ethlink.cli import main
from ethlink.sim import Simulation

from conftest import NS, ser

ROOT = Path(__file__).resolve().parents[1]
G = 10**9


def fabric(hosts=5, **extra):
    d = {"name": "replay-star", "seed": 11,
         "topology": {"kind": "star", "hosts": hosts, "rate": "100G", "delay": "100ns"},
         "switch": {"buffer": "64KiB", "threshold": "static"}, "run": {"trace_capacity": 1024}}
    d.update(extra)
    return d


def traced(sim, path: Path, metadata=None) -> ethlink.Result:
    with T.TraceWriter(path, metadata or T.simulation_metadata(sim), engine=sim.engine) as w:
        return sim.run(trace_sink=w.write)


def sample_table():
    return R.as_workload({
        "id": [10, 11, 12], "time_ps": [0, 5000, 100], "src": [1, 2, 3], "dst": [0, 0, 1],
        "op": ["raw", "write", "read"], "bytes": [1000, 9000, 5000], "prio": [0, 3, 3],
        "qp": [-1, 0, 0], "dep": [-1, -1, 10]})


# --- files: formats and errors -------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".arrow", ".parquet", ".csv"])
def test_write_load_round_trip(tmp_path, suffix):
    t = sample_table()
    p = R.write_workload(t, tmp_path / f"wl{suffix}")
    back = R.load_workload(p)
    assert back.schema.equals(R.WORKLOAD_SCHEMA, check_metadata=False)
    assert back.equals(t, check_metadata=False)


def test_arrow_stream_and_optional_columns(tmp_path):
    """An IPC stream without qp/dep, int64 everywhere and ops as numbers loads with
    qp = dep = -1 and ops named."""
    t = pa.table({"id": [0, 1], "time_ps": [0, 7], "src": [0, 1], "dst": [1, 0], "op": [1, 3],
                  "bytes": [100, 200], "prio": [0, 0]})
    p = tmp_path / "wl.data"
    with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    back = R.load_workload(p)
    assert back["op"].to_pylist() == ["write", "read"]
    assert back["qp"].to_pylist() == [-1, -1] and back["dep"].to_pylist() == [-1, -1]


def test_csv_empty_optional_cells_mean_none(tmp_path):
    p = tmp_path / "wl.csv"
    p.write_text("id,time_ps,src,dst,op,bytes,prio,qp,dep\n0,0,0,1,write,10,0,,\n1,5,1,0,send,10,0,2,0\n")
    back = R.load_workload(p)
    assert back["qp"].to_pylist() == [-1, 2] and back["dep"].to_pylist() == [-1, 0]


@pytest.mark.parametrize("text, needles", [
    ("id,time,src,dst,op,bytes,prio\n0,0,0,1,raw,10,0\n", ["lacks column 'time_ps'", "found 'time'"]),
    ("id,time_ps,src,dst,op,bytes,prio,dpe\n0,0,0,1,raw,10,0,1\n", ["unknown column 'dpe'", "did you mean 'dep'"]),
    ("id,time_ps,src,dst,op,bytes,prio\n0,1us,0,1,raw,10,0\n", ["column time_ps must be integers", "'1us'"]),
    ("id,time_ps,src,dst,op,bytes,prio\n0,0,0,1,raw,10.5,0\n", ["column bytes row 0", "not a whole number"]),
    ("id,time_ps,src,dst,op,bytes,prio\n0,0,0,1,raw,10,0\n1,0,,1,raw,10,0\n", ["column src row 1 is empty"]),
    ("id,time_ps,src,dst,op,bytes,prio\n0,0,0,1,wirte,10,0\n", ["column op row 0 is 'wirte'", "did you mean 'write'"]),
])
def test_bad_tables_name_column_and_row(tmp_path, text, needles):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ethlink.ScenarioError) as e:
        R.load_workload(p)
    for n in needles:
        assert n in str(e.value)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("op", R.LOADSTORE_OPS)
def test_loadstore_ops_replay_on_the_gpus_loadstore_engines(tmp_path, op):
    """A Load/Store row goes to its GPU's Load/Store engine, not to a queue pair: the run
    has one RDMA message and one Load/Store operation of that kind, and both complete."""
    p = tmp_path / "ls.csv"
    p.write_text(f"id,time_ps,src,dst,op,bytes,prio\n0,0,0,1,write,8,0\n1,0,0,1,{op},8,0\n")
    wl = R.load_workload(p)
    assert wl.column("op").to_pylist()[1] == op
    fabric = ethlink.Scenario.from_dict({"topology": {"kind": "star", "hosts": 2}, "flow": [
        {"src": "h0", "dst": "h1", "size": 1}]})
    res = ethlink.Simulation(fabric, workload=wl).run()
    kind = ethlink.scenario.LS_KINDS.index("fadd" if op == "atomic" else op)
    assert len(res.flows) == 1 and res.flows["complete_ps"][0] > 0
    assert list(res.ls_ops["kind"]) == [kind] and res.ls_ops["complete_ps"][0] >= res.ls_ops["start_ps"][0] >= 0


def test_loadstore_ops_cannot_wait_for_a_dependency(tmp_path):
    p = tmp_path / "ls.csv"
    p.write_text("id,time_ps,src,dst,op,bytes,prio,dep\n0,0,0,1,write,8,0,-1\n1,0,0,1,load,64,0,0\n")
    fabric = ethlink.Scenario.from_dict({"topology": {"kind": "star", "hosts": 2}, "flow": [
        {"src": "h0", "dst": "h1", "size": 1}]})
    with pytest.raises(ethlink.ScenarioError, match=r"row 1 .*dep must be -1 for a Load/Store op"):
        ethlink.Simulation(fabric, workload=R.load_workload(p))


@pytest.mark.parametrize("content, needle", [
    (None, "no such workload file"),
    (b"", "empty file"),
    (b"ARROW1\0\0garbage", "corrupted or truncated Arrow file"),
    (b"PAR1\0\0\0\0garbage", "corrupted or truncated Parquet file"),
    (b"\x00\x01binary\xff\xfe", "not a readable CSV"),
])
def test_broken_files_give_trace_errors(tmp_path, content, needle):
    p = tmp_path / "wl.bin"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(T.TraceError, match=needle):
        R.load_workload(p)


def test_truncated_arrow_workload(tmp_path):
    p = R.write_workload(sample_table(), tmp_path / "wl.arrow")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(T.TraceError, match="corrupted or truncated Arrow file"):
        R.load_workload(p)


def test_rows_checked_against_the_fabric():
    """Host range and unknown dependencies are checked when the workload meets a fabric."""
    sc = R.fabric_scenario(fabric(hosts=3))
    t = sample_table()        # host 3 does not exist on 3 hosts
    with pytest.raises(ethlink.ScenarioError, match=r"row 2 \(id 12\): src must be a host index 0..2"):
        Simulation(sc, workload=t)
    bad = R.as_workload({**{c: t[c] for c in t.column_names}, "src": [1, 2, 0], "dep": [-1, -1, 99]})
    with pytest.raises(ethlink.ScenarioError, match="dep 99 is not the id of any operation"):
        Simulation(sc, workload=bad)
    # the smallest id that repeats is named, wherever its copies are
    ids = t.column("id").to_pylist()
    dup = R.as_workload({**{c: t[c] for c in t.column_names}, "src": [1, 2, 0], "id": [ids[2], ids[1], ids[2]]})
    with pytest.raises(ethlink.ScenarioError, match=f"id {ids[2]} appears more than once"):
        Simulation(sc, workload=dup)


def test_fabric_without_traffic(tmp_path):
    p = tmp_path / "fab.toml"
    p.write_text('name = "bare"\n[topology]\nkind = "star"\nhosts = 4\n')
    sc = R.load_fabric(str(p), ["seed=5"])
    assert sc.flows == () and sc.workloads == () and sc.seed == 5
    assert "flow" not in sc.source and sc.source["seed"] == 5
    sim = Simulation(sc, workload=C.ring_allreduce(4, 4096, op="raw"))
    assert "workload" in R.replay_metadata(sim, C.ring_allreduce(4, 4096, op="raw"))


# --- the round trip -------------------------------------------------------------------------

def test_run_workload_replay_identical_bytes_cli(tmp_path):
    """`run --trace hop`, `workload`, `replay` on the same fabric and seed: the second
    trace.arrow is the first one, byte for byte (a RoCE incast with drops and
    go-back-N retransmissions, plus a raw flow, so timing matters)."""
    toml = tmp_path / "sc.toml"
    toml.write_text('''name = "rt"\nseed = 4\n[topology]\nkind = "star"\nhosts = 5\nrate = "100G"\n
[switch]\nbuffer = "64KiB"\nthreshold = "static"\n
[[workload]]\nkind = "incast"\nreceiver = "h0"\nsize = "100KiB"\ntransport = "roce"\nverb = "write"\n
[[flow]]\nsrc = "h1"\ndst = "h2"\nsize = 30000\nstart = "3us"\n''')
    runner = CliRunner()
    a, b = tmp_path / "a", tmp_path / "b"
    r = runner.invoke(main, ["run", str(toml), "-o", str(a), "--trace", "hop", "--quiet"])
    assert r.exit_code == 0, r.output
    for suffix in (".arrow", ".csv"):
        wl = tmp_path / f"wl{suffix}"
        r = runner.invoke(main, ["workload", str(a / "trace.arrow"), "-o", str(wl)])
        assert r.exit_code == 0, r.output
        r = runner.invoke(main, ["replay", str(wl), "--fabric", str(toml), "-o", str(b), "--trace", "hop", "--quiet"])
        assert r.exit_code == 0, r.output
        assert (b / "trace.arrow").read_bytes() == (a / "trace.arrow").read_bytes()
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert sb["retransmitted_packets"] == sa["retransmitted_packets"] > 0
        fa, fb = (pq.read_table(d / "flows.parquet") for d in (a, b))
        assert fb["complete_ps"].to_pylist() == fa["complete_ps"].to_pylist()
        assert pq.read_table(b / "qps.parquet").equals(pq.read_table(a / "qps.parquet"))
    # a trace file is also accepted as WORKLOAD directly
    r = runner.invoke(main, ["replay", str(a / "trace.arrow"), "--fabric", str(toml), "-o", str(b),
                             "--trace", "hop", "--quiet"])
    assert r.exit_code == 0 and (b / "trace.arrow").read_bytes() == (a / "trace.arrow").read_bytes()


def test_extracted_workload_is_the_scenarios_traffic(tmp_path):
    d = fabric(workload=[{"kind": "incast", "receiver": "h0", "size": "50KiB", "stagger": "1us"}],
               flow=[{"src": 2, "dst": 3, "size": 777, "start": "2us", "prio": 5,
                      "transport": "roce", "verb": "read"}])
    sc = ethlink.Scenario.from_dict(d)
    traced(Simulation(sc, trace="endpoints"), tmp_path / "trace.arrow")
    wl = R.workload_from_trace(tmp_path / "trace.arrow")
    assert wl["id"].to_pylist() == [0, 1, 2, 3, 4]
    assert wl["op"].to_pylist() == ["read", "raw", "raw", "raw", "raw"]
    assert wl["src"].to_pylist() == [2, 1, 2, 3, 4] and wl["dst"].to_pylist() == [3, 0, 0, 0, 0]
    assert wl["time_ps"].to_pylist() == [2_000_000, 0, 1_000_000, 2_000_000, 3_000_000]
    assert wl["bytes"].to_pylist() == [777] + [51200] * 4 and wl["prio"].to_pylist() == [5, 0, 0, 0, 0]
    assert set(wl["dep"].to_pylist()) == {-1} and set(wl["qp"].to_pylist()) == {-1}


def test_replay_of_a_replay_keeps_dependencies(tmp_path):
    """A workload with dependencies and shared QPs (not the scenario's own traffic) is
    carried in the trace metadata: extracted exactly, and replayed to the same bytes."""
    sc = R.fabric_scenario(fabric(hosts=4))
    wl = C.ring_allreduce(4, 40000, op="raw", step_gap_ps=500)
    sim = Simulation(sc, trace="hop", workload=wl)
    traced(sim, tmp_path / "a.arrow", R.replay_metadata(sim, wl))
    back = R.workload_from_trace(tmp_path / "a.arrow")
    assert back.equals(wl, check_metadata=False)
    sim2 = Simulation(sc, trace="hop", workload=back)
    traced(sim2, tmp_path / "b.arrow", R.replay_metadata(sim2, back))
    assert (tmp_path / "a.arrow").read_bytes() == (tmp_path / "b.arrow").read_bytes()
    md = T.read_trace(tmp_path / "a.arrow").schema.metadata
    assert md[b"workload_rows"] == b"24"


def test_metadata_that_does_not_describe_the_run_is_refused(tmp_path):
    d = fabric(workload=[{"kind": "incast", "receiver": "h0", "size": "20KiB"}])
    sim = Simulation(ethlink.Scenario.from_dict(d), trace="endpoints")
    other = ethlink.Scenario.from_dict(fabric(workload=[{"kind": "incast", "receiver": "h1", "size": "20KiB"}]))
    md = dict(T.simulation_metadata(sim), scenario_source=json.dumps(other.source))
    traced(sim, tmp_path / "t.arrow", md)
    with pytest.raises(T.TraceError, match="a packet of flow 0 goes h1->h0 at priority 0, but op 0 is h0->h1"):
        R.workload_from_trace(tmp_path / "t.arrow")


def test_cli_errors_exit_2(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.csv"
    bad.write_text("id,time_ps,src,dst,op,bytes,prio\n0,0,0,9,raw,10,0\n")
    # incast-raw's own 64-sender incast does not fit 4 hosts: it is left out, not an error
    r = runner.invoke(main, ["replay", str(bad), "--fabric", "incast-raw", "--set", "topology.hosts=4",
                             "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "dst must be a host index 0..3" in r.output, r.output
    r = runner.invoke(main, ["workload", str(tmp_path / "nope.arrow"), "-o", str(tmp_path / "w.arrow")])
    assert r.exit_code == 2 and "no such trace file" in r.output
    r = runner.invoke(main, ["replay", str(bad), "--fabric", "no-such-fabric", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no built-in scenario" in r.output


# --- collectives ----------------------------------------------------------------------------

def test_ring_allreduce_shape():
    n, bucket = 5, 5 * 1000 + 3
    t = C.ring_allreduce(n, bucket, op="send", prio=2, start_ps=7, step_gap_ps=11)
    steps = 2 * (n - 1)
    assert t.num_rows == steps * n
    ids, dep = t["id"].to_numpy(), t["dep"].to_numpy()
    src, dst, size = t["src"].to_numpy(), t["dst"].to_numpy(), t["bytes"].to_numpy()
    s, i = ids // n, ids % n
    assert np.array_equal(ids, np.arange(steps * n))
    assert np.array_equal(dst, (src + 1) % n) and np.array_equal(src, i)
    first = s == 0
    assert np.all(dep[first] == -1) and np.all(t["time_ps"].to_numpy()[first] == 7)
    # step s of rank i waits for step s-1 of rank i-1: the op that delivered to rank i
    assert np.array_equal(dep[~first], (s[~first] - 1) * n + (i[~first] - 1) % n)
    assert np.array_equal(dst[dep[~first]], src[~first])
    assert np.all(t["time_ps"].to_numpy()[~first] == 11)
    # each rank sends 2(N-1)/N of the bucket; chunk sizes differ by at most one byte
    chunks = C.chunk_sizes(bucket, n)
    assert chunks.sum() == bucket and chunks.max() - chunks.min() == 1
    per_rank = np.bincount(src, weights=size)
    assert set(size.tolist()) <= set(chunks.tolist())
    # every step sends each chunk once; every op forwards the chunk its dependency brought
    assert np.all(np.bincount(s, weights=size) == bucket)
    assert np.all(size[~first] == size[dep[~first]])
    assert abs(per_rank.mean() - 2 * (n - 1) * bucket / n) < 2 * (n - 1)
    assert set(t["op"].to_pylist()) == {"send"} and set(t["prio"].to_pylist()) == {2}
    assert set(t["qp"].to_pylist()) == {0}


def test_ring_allreduce_on_idle_star_is_analytic():
    """Raw ops (completion = last byte delivered) on an idle 100G star, chunks of 4 full
    frames: every step takes T = 3 W + 2 (ser(frame + preamble) + delay) + switch latency +
    host latency (frames pipelined, store-and-forward, equal rates), with W a frame's
    wire time; steps run back to back through the dependencies, step_gap apart."""
    n, gap = 4, 1_000
    sc = R.fabric_scenario(fabric(hosts=n, switch={"buffer": "1MiB"}))
    t = C.ring_allreduce(n, n * 4 * 4096, op="raw", step_gap_ps=gap)
    sim = Simulation(sc, workload=t)
    res = sim.run()
    fl = res.flows
    rate, delay = 100 * G, 100 * NS
    frame = 4096 + 22
    w = ser(frame + 20, rate)
    step = 3 * w + 2 * (ser(frame + 8, rate) + delay) + 300 * NS + 200 * NS
    assert np.all(sim.compiled.ideal_fct_ps == step)
    assert np.all(fl["complete_ps"] - fl["start_ps"] == step)
    dep = t["dep"].to_numpy()
    has = dep >= 0
    assert np.array_equal(fl["start_ps"][has], fl["complete_ps"][dep[has]] + gap)
    assert fl["complete_ps"].max() == 2 * (n - 1) * step + (2 * n - 3) * gap


def test_ring_allreduce_roce_steps_follow_completions():
    """RoCE WRITE steps on one QP per rank: each starts step_gap after its dependency's
    CQE, and all complete."""
    sc = R.fabric_scenario(fabric(hosts=4, switch={"buffer": "1MiB"}))
    t = C.ring_allreduce(4, 4 * 8192, op="write", step_gap_ps=2_000)
    res = Simulation(sc, workload=t).run()
    fl = res.flows
    assert (fl["complete_ps"] >= 0).all(), "messages posted on a drained, shared QP never complete"
    dep = t["dep"].to_numpy()
    has = dep >= 0
    assert np.array_equal(fl["start_ps"][has], fl["complete_ps"][dep[has]] + 2_000)


def test_moe_alltoall_shape():
    n = 6
    t = C.moe_alltoall(n, 1000, op="write", expert_ps=50, skew=1.0, seed=3)
    m = n * (n - 1)
    assert t.num_rows == 2 * m
    src, dst, size, dep = (t[c].to_numpy() for c in ("src", "dst", "bytes", "dep"))
    disp = np.arange(m)
    pairs = set(zip(src[disp].tolist(), dst[disp].tolist()))
    assert len(pairs) == m and all(a != b for a, b in pairs)
    assert np.all(dep[disp] == -1)
    # combine k+m returns dispatch k: reversed, same bytes, waits for it, expert_ps later
    comb = m + disp
    assert np.array_equal(dep[comb], disp)
    assert np.array_equal(src[comb], dst[disp]) and np.array_equal(dst[comb], src[disp])
    assert np.array_equal(size[comb], size[disp])
    assert np.all(t["time_ps"].to_numpy()[comb] == 50)
    # every source sends (almost exactly) bytes_per_pair x (N-1), more to popular experts
    per_src = np.bincount(src[disp], weights=size[disp])
    assert np.all(per_src <= 1000 * (n - 1)) and np.all(per_src > 1000 * (n - 1) - n)
    order = np.random.default_rng(3).permutation(n)
    for s in range(n):
        mine = src[disp] == s
        pop = (order[dst[disp][mine]] + 1.0) ** -1.0
        assert np.array_equal(np.argsort(-pop, kind="stable"), np.argsort(-size[disp][mine], kind="stable"))
    flat = C.moe_alltoall(n, 1000, combine=False)
    assert flat.num_rows == m and set(flat["bytes"].to_pylist()) == {1000}
    # first destination of each source differs: rotated order
    assert len({int(flat["dst"][k * (n - 1)].as_py()) for k in range(n)}) == n


def test_moe_replay_combines_follow_dispatches():
    sc = R.fabric_scenario(fabric(hosts=4, switch={"buffer": "1MiB"}))
    t = C.moe_alltoall(4, 20000, op="write", expert_ps=3_000)
    res = Simulation(sc, workload=t).run()
    fl = res.flows
    dep = t["dep"].to_numpy()
    has = dep >= 0
    assert (fl["complete_ps"] >= 0).all()
    assert np.array_equal(fl["start_ps"][has], fl["complete_ps"][dep[has]] + 3_000)


# --- shipped samples ------------------------------------------------------------------------

def test_samples_are_the_generators_output():
    readme = (ROOT / "traces" / "README.md").read_text()
    for name, make in C.SAMPLES.items():
        p = ROOT / "traces" / name
        assert p.stat().st_size < 200_000, name
        want = make()
        assert R.load_workload(p).equals(want, check_metadata=False), f"{name}: regenerate with " \
            "python -m ethlink.collectives traces"
        call = want.schema.metadata[b"generator"].decode()
        assert name in readme and call in readme, f"traces/README.md must give {name}'s call: {call}"
