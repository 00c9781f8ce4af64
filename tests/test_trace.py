"""ethlink.trace: the Arrow schema, writing, reading, filters and interrupted runs.

The traces are real runs of a small star incast that overflows the switch's buffer, so a
trace holds enqueues, transmissions, receptions, deliveries and drops; row counts are
checked against the engine's own counters (each relation below follows from where
csrc/engine.pyx calls trace_pkt).
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow as pa
import pytest
from click.testing import CliRunner

import ethlink
from ethlink import _engine, trace as T
from ethlink.cli import main

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def incast(hosts: int = 5, size: str = "1MiB", **run) -> ethlink.Scenario:
    """`hosts - 1` senders into h0 through a 64 KiB switch buffer: drops guaranteed."""
    return ethlink.Scenario.from_dict({
        "name": "trace-incast", "seed": 7,
        "topology": {"kind": "star", "hosts": hosts, "rate": "100G", "delay": "100ns"},
        "switch": {"buffer": "64KiB", "threshold": "static"},
        "run": {"trace_capacity": 1024, **run},
        "workload": [{"kind": "incast", "receiver": "h0", "size": size}],
    })


def traced_run(path: Path, level: str = "hop", **kw):
    """Run the incast with a TraceWriter; also keep the raw engine records."""
    sim = ethlink.Simulation(incast(), trace=level)
    recs = []

    def sink(r):
        recs.append(r)
        w.write(r)

    with T.TraceWriter.for_simulation(sim, path, **kw) as w:
        result = sim.run(trace_sink=sink)
    return sim, result, np.concatenate(recs) if recs else np.zeros(0, _engine.TRACE_DTYPE)


@pytest.fixture(scope="module")
def hop(tmp_path_factory):
    path = tmp_path_factory.mktemp("hop") / "trace.arrow"
    sim, result, recs = traced_run(path)
    return sim, result, recs, path, T.read_trace(path)


def ev(table, name):
    return T.codes(table, "event") == T.EVENT_NAMES.index(name)


# --- the names tables and the schema mirror the engine ---------------------------------

def _pxd_enum(enum: str) -> list[tuple[str, int]]:
    text = (ROOT / "csrc" / "core.pxd").read_text()
    block = re.search(rf"^cdef enum {enum}:.*?\n((?:[ \t]+\w+ = \d+.*\n)+)", text, re.M)
    assert block, f"cdef enum {enum} not found in csrc/core.pxd"
    return [(m[1], int(m[2])) for m in re.finditer(r"^\s+(\w+) = (\d+)", block[1], re.M)]


@pytest.mark.parametrize("enum, prefix, names", [
    ("TraceEvent", "TE_", T.EVENT_NAMES),
    ("FrameKind", "FK_", T.FRAME_KINDS),
    ("DropReason", "DR_", T.DROP_REASONS),
])
def test_names_tables_follow_core_pxd(enum, prefix, names):
    """Each names table lists core.pxd's enum members in value order, named without the
    prefix in lower case: change one without the other and this fails."""
    members = _pxd_enum(enum)
    assert [v for _, v in members] == list(range(len(members))), f"{enum} values are not 0..n-1"
    assert [n.removeprefix(prefix).lower() for n, _ in members] == list(names)


def test_flag_bits_follow_core_pxd():
    text = (ROOT / "csrc" / "core.pxd").read_text()
    block = re.search(r"^cdef enum PacketFlag:.*?\n((?:[ \t]+\w+ = \d+.*\n)+)", text, re.M)
    pxd = {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+) = (\d+)", block[1], re.M)}
    ours = {n: getattr(T, n) for n in T.__all__ if n.startswith("PF_")}
    assert ours and all(pxd[n] == v for n, v in ours.items()) and set(pxd) - set(ours) == {"PF_ROUTED"}


def test_schema_columns_are_the_trace_records_fields():
    fields = [n for n in _engine.TRACE_DTYPE.names if not n.startswith("pad")]
    assert T.TRACE_SCHEMA.names == fields
    for f in T.TRACE_SCHEMA:
        want = _engine.TRACE_DTYPE[f.name]
        if f.type == T.ENUM_TYPE:
            assert want == np.uint8
        else:
            assert np.dtype(f.type.to_pandas_dtype()) == want, f.name


def test_module_docstring_documents_every_column():
    doc = T.__doc__
    for name in T.TRACE_SCHEMA.names:
        assert re.search(rf"^\| {name} +\|", doc, re.M), name


# --- round trip of a real run -----------------------------------------------------------

def test_round_trip_keeps_every_record(hop):
    sim, result, recs, path, table = hop
    assert table.schema.equals(T.TRACE_SCHEMA, check_metadata=False)
    assert table.num_rows == len(recs) > 1000
    assert len(table["time_ps"].chunks) > 1       # several batches: capacity 1024
    for name, typ, _ in T.COLUMNS:
        if typ == T.ENUM_TYPE:
            names = np.array(T.ENUMS[name], dtype=object)
            assert table[name].to_pylist() == names[recs[name]].tolist(), name
        else:
            np.testing.assert_array_equal(table[name].to_numpy(), recs[name], err_msg=name)


def test_row_counts_follow_the_engine(hop):
    """Relations that hold for a run to idle (where trace_pkt is called in engine.pyx):
    one enqueue and one tx_start per hop, one deliver per delivered packet, every switch
    rx either enqueued or dropped at the queue, every drop counted with its reason."""
    sim, result, _, _, t = hop
    c = result.counters
    node, port, pkt = t["node"].to_numpy(), t["port"].to_numpy(), t["pkt"].to_numpy()
    host_nodes = np.asarray(sim.compiled.fabric.hosts)
    at_switch = ~np.isin(node, host_nodes)
    assert c["packets_dropped"] > 0 and c["packets_delivered"] > 0

    assert ev(t, "tx_start").sum() == c["packet_hops"]
    assert ev(t, "enqueue").sum() == ev(t, "tx_start").sum()        # all queues drained at idle
    assert (ev(t, "enqueue") & ~at_switch).sum() == c["packets_sent"]
    assert ev(t, "deliver").sum() == c["packets_delivered"]
    assert len(np.unique(pkt[ev(t, "deliver")])) == c["packets_delivered"]
    queue_drops = ev(t, "drop") & (port >= 0)
    assert (ev(t, "rx") & at_switch).sum() == (ev(t, "enqueue") & at_switch).sum() + (queue_drops & at_switch).sum()
    assert ev(t, "drop").sum() == c["packets_dropped"]
    reasons = np.array(t["reason"].to_pylist(), dtype=object)
    got = dict(zip(*np.unique(reasons[ev(t, "drop")], return_counts=True)))
    assert {k: int(v) for k, v in got.items()} == result.summary["drops"]
    assert set(reasons[~ev(t, "drop")]) == {"none"}
    # On a star every delivered packet crossed two links.
    delivered = pkt[ev(t, "deliver")]
    tx_pkts, tx_counts = np.unique(pkt[ev(t, "tx_start")], return_counts=True)
    assert (tx_counts[np.isin(tx_pkts, delivered)] == 2).all()
    assert (np.diff(t["time_ps"].to_numpy()) >= 0).all()


def sim_flows(hop):
    return hop[1].flows


def test_enum_columns_are_dictionaries_of_the_names(hop):
    t = hop[4]
    for name, names in T.ENUMS.items():
        chunk = t[name].chunks[0]
        assert chunk.type == pa.dictionary(pa.int8(), pa.string())
        assert chunk.dictionary.to_pylist() == list(names)
    assert set(t["event"].to_pylist()) == {"enqueue", "tx_start", "rx", "deliver", "drop",
                                           "op_issue", "op_complete"}
    ops = t.filter(pc.equal(t["event"], "op_issue"))
    assert ops.num_rows == len(sim_flows(hop)) and ops["pkt"].to_pylist() == [-1] * ops.num_rows
    assert set(t["kind"].to_pylist()) == {"raw"}


def test_metadata_describes_the_run(hop):
    sim, result, _, _, t = hop
    info = T.TraceInfo.of(t)
    md = info.metadata
    sc = sim.scenario
    assert set(T.REQUIRED_METADATA) <= set(md)
    assert (md["scenario"], md["seed"], md["ethlink_version"]) == (sc.name, "7", ethlink.__version__)
    assert md["trace_level"] == "hop" and md["complete"] == "true" and md["incomplete_reason"] == ""
    assert int(md["rows"]) == t.num_rows and int(md["batches"]) == len(t["time_ps"].chunks)
    assert json.loads(md["scenario_source"]) == json.loads(json.dumps(sc.source))
    assert ethlink.Scenario.from_dict(json.loads(md["scenario_source"])) == sc
    assert info.nodes == sim.compiled.fabric.names
    np.testing.assert_array_equal(info.port_node, sim.compiled.port_table.node)
    np.testing.assert_array_equal(info.port_peer, sim.compiled.port_table.peer)
    assert info.hosts == list(sim.compiled.fabric.hosts)
    assert json.loads(md["filters"]) == {"nodes": [], "flows": [], "events": []}
    assert info.port_of("sw0", 2) == int(np.nonzero(info.port_node == info.node_index("sw0"))[0][2])


def test_endpoints_level_has_only_host_rows(tmp_path):
    sim, result, _ = traced_run(tmp_path / "trace.arrow", level="endpoints")
    t = T.read_trace(tmp_path / "trace.arrow")
    assert T.TraceInfo.of(t).metadata["trace_level"] == "endpoints"
    assert t.num_rows > 0
    assert set(t["node"].to_numpy()) <= set(sim.compiled.fabric.hosts)
    assert ev(t, "deliver").sum() == result.counters["packets_delivered"]


def test_same_scenario_and_seed_give_byte_identical_files(tmp_path):
    traced_run(tmp_path / "a.arrow")
    traced_run(tmp_path / "b.arrow")
    a, b = (tmp_path / "a.arrow").read_bytes(), (tmp_path / "b.arrow").read_bytes()
    assert a[:6] == b"ARROW1" and a == b


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_compressions_hold_the_same_table(hop, tmp_path, compression):
    _, _, recs, _, table = hop
    w = T.TraceWriter(tmp_path / "t.arrow", _stub_meta(hop[0]), compression=compression)
    for lo in range(0, len(recs), 3000):
        w.write(recs[lo:lo + 3000])
    w.close()
    assert T.read_trace(tmp_path / "t.arrow").equals(table)
    with pytest.raises(ValueError, match="gzip"):
        T.TraceWriter(tmp_path / "u.arrow", _stub_meta(hop[0]), compression="gzip")


def test_the_background_writer_writes_the_same_bytes_as_a_direct_one(hop, tmp_path):
    """The worker thread changes when a batch is written, never what: the file is the one
    a writer without a thread produces, batch for batch."""
    _, _, recs, _, _ = hop
    for name, background in (("bg.arrow", True), ("fg.arrow", False)):
        w = T.TraceWriter(tmp_path / name, _stub_meta(hop[0]), background=background)
        for lo in range(0, len(recs), 700):
            w.write(recs[lo:lo + 700])
        w.close()
    assert (tmp_path / "bg.arrow").read_bytes() == (tmp_path / "fg.arrow").read_bytes()


def test_a_failed_background_write_is_raised_by_the_next_call(hop, tmp_path):
    _, _, recs, _, _ = hop
    w = T.TraceWriter(tmp_path / "t.arrow", _stub_meta(hop[0]))
    bad = recs[:10].copy()
    bad["kind"][3] = 99                     # refused by the worker's conversion
    w.write(bad)
    with pytest.raises(T.TraceError, match="kind=99 has no name"):
        w.write(recs[10:20])
    w.close(False, "test")
    assert T.read_trace(tmp_path / "t.arrow").num_rows == 10     # the batch handed over after the error


def test_trace_columns_split_every_field(hop):
    _, _, recs, _, _ = hop
    cols = _engine.trace_columns(recs)
    assert [c.dtype for c in cols] == [recs.dtype.fields[n][0] for n in recs.dtype.names]
    for name, col in zip(recs.dtype.names, cols):
        assert col.flags.c_contiguous and np.array_equal(col, recs[name]), name
    with pytest.raises(TypeError, match="contiguous"):
        _engine.trace_columns(recs[::2])


def test_the_cli_offers_the_writers_compressions_and_default():
    from ethlink import cli
    assert cli.TRACE_COMPRESSIONS == T.COMPRESSIONS and cli.TRACE_DEFAULT_COMPRESSION == T.DEFAULT_COMPRESSION


def _stub_meta(sim):
    """The metadata of the `hop` run's fabric (the reader checks the rows against it)."""
    return {**T.simulation_metadata(sim), "scenario": "stub", "ethlink_version": "0"}


def test_records_with_an_unknown_enum_value_are_refused(tmp_path):
    recs = np.zeros(4, dtype=_engine.TRACE_DTYPE)
    recs["event"][2] = len(T.EVENT_NAMES)
    with pytest.raises(T.TraceError, match=rf"event={len(T.EVENT_NAMES)} has no name"):
        T.records_to_batch(recs)


def test_file_is_the_head_the_stream_and_a_footer_with_the_final_metadata(hop, tmp_path):
    """trace.arrow is the .partial (file head + stream) with a footer appended: the stream
    after the head still reads as the run-time stream (complete=false), the file reader
    sees the footer's final metadata, and the batches are the bytes pyarrow's own file
    writer produces for them."""
    _, _, _, path, table = hop
    data = path.read_bytes()
    stream = pa.ipc.open_stream(pa.py_buffer(data)[8:]).read_all()
    assert stream.equals(table)
    assert stream.schema.metadata[b"complete"] == b"false" and table.schema.metadata[b"complete"] == b"true"
    ref = pa.BufferOutputStream()
    with pa.ipc.new_file(ref, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as w:
        for b in table.to_batches():
            w.write_batch(b)
    ref = ref.getvalue().to_pybytes()

    def messages(buf):          # bytes after the schema message, up to the end-of-stream marker
        meta = int.from_bytes(buf[12:16], "little")
        return buf[16 + meta: buf.rindex(b"\xff\xff\xff\xff\0\0\0\0")]
    assert messages(data) == messages(ref)


def test_a_torn_last_message_is_cut_when_the_file_is_finished(hop, tmp_path):
    _, _, recs, _, _ = hop
    w = T.TraceWriter(tmp_path / "t.arrow", _stub_meta(hop[0]), background=False)
    w.write(recs[:500])
    w.write(recs[500:900])
    w._sink.write(b"\xff\xff\xff\xff" + (4000).to_bytes(4, "little") + bytes(100))   # as a crash mid-write
    w.close(False, "disk full")
    t = T.read_trace(tmp_path / "t.arrow")
    assert t.num_rows == 900 and T.TraceInfo.of(t).metadata["rows"] == "900"


# --- filters -----------------------------------------------------------------------------

def test_filters_keep_the_matching_rows(hop, tmp_path):
    sim, _, recs, _, _ = hop
    filt = T.TraceFilter(nodes=("sw0", "h0"), flows=(1, 2), events=("tx_start", "drop"))
    w = T.TraceWriter(tmp_path / "f.arrow", T.simulation_metadata(sim), trace_filter=filt)
    for lo in range(0, len(recs), 1000):
        w.write(recs[lo:lo + 1000])
    w.close()
    t = T.read_trace(tmp_path / "f.arrow")
    names = sim.compiled.fabric.names
    want = recs[np.isin(recs["node"], [names.index("sw0"), names.index("h0")])
                & np.isin(recs["flow"], [1, 2]) & np.isin(recs["event"], [1, 3])]
    assert 0 < t.num_rows == len(want) < len(recs)
    np.testing.assert_array_equal(t["pkt"].to_numpy(), want["pkt"])
    assert json.loads(T.TraceInfo.of(t).metadata["filters"]) == {
        "nodes": ["sw0", "h0"], "flows": [1, 2], "events": ["tx_start", "drop"]}
    with pytest.raises(ValueError, match=r"no node 'sw1' \(did you mean sw0"):
        T.TraceWriter(tmp_path / "g.arrow", T.simulation_metadata(sim), trace_filter=T.TraceFilter(nodes=("sw1",)))
    with pytest.raises(ValueError, match="no event 'send'"):
        T.TraceFilter(events=("send",)).compile([])


# --- bad files ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "truncated: the Arrow file ends after"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: np.random.default_rng(1).bytes(5000), "not an Arrow IPC file"),
    (lambda b: b"", "empty file"),
    (lambda b: b[:-200] + bytes(194) + b[-6:], "corrupted"),
])
def test_damaged_files_raise_trace_error_naming_the_file(hop, tmp_path, damage, message):
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(damage(hop[3].read_bytes()))
    with pytest.raises(T.TraceError, match=message) as exc:
        T.read_trace(bad)
    assert str(bad) in str(exc.value)


def test_missing_file_and_foreign_arrow_file_raise_trace_error(tmp_path):
    with pytest.raises(T.TraceError, match="no such trace file"):
        T.read_trace(tmp_path / "nope.arrow")
    other = tmp_path / "other.arrow"
    with pa.ipc.new_file(str(other), pa.schema([("x", pa.int64())])) as w:
        w.write_table(pa.table({"x": [1, 2]}))
    with pytest.raises(T.TraceError, match="not an ethlink trace"):
        T.read_trace(other)


# --- interrupted runs ----------------------------------------------------------------------

@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_in_the_run_leaves_an_incomplete_readable_file(tmp_path, exc_type):
    path = tmp_path / "trace.arrow"
    sim = ethlink.Simulation(incast(), trace="hop")
    written = []

    def sink(recs):
        if len(written) == 3:
            raise exc_type("stop here")
        written.append(len(recs))
        w.write(recs)

    with pytest.raises(exc_type):
        with T.TraceWriter.for_simulation(sim, path) as w:
            sim.run(trace_sink=sink)
    t = T.read_trace(path)
    md = T.TraceInfo.of(t).metadata
    assert md["complete"] == "false" and md["incomplete_reason"].startswith(exc_type.__name__)
    assert t.num_rows == sum(written) == int(md["rows"])
    assert not T.partial_path(path).exists()


def test_records_left_in_the_engine_are_drained_on_close(tmp_path):
    """A run stopped between two drains: close() takes what the engine still holds."""
    sim = ethlink.Simulation(incast(), trace="hop")
    sim.engine.run(2**62, 500)                 # 500 events, not drained
    w = T.TraceWriter.for_simulation(sim, tmp_path / "trace.arrow")
    w.close(False, "stopped by the test")
    t = T.read_trace(tmp_path / "trace.arrow")
    assert t.num_rows > 0 and T.TraceInfo.of(t).metadata["incomplete_reason"] == "stopped by the test"


HARD_KILL = textwrap.dedent("""
    import os, signal, sys
    import ethlink
    from ethlink import trace as T
    sys.path.insert(0, {tests!r})
    from test_trace import incast
    sim = ethlink.Simulation(incast(), trace="hop")
    w = T.TraceWriter.for_simulation(sim, {path!r})
    n = [0]
    def sink(recs):
        w.write(recs)
        n[0] += 1
        if n[0] == 4:
            w.flush()
            print(w.rows, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    sim.run(trace_sink=sink)
""")


def test_hard_kill_leaves_a_readable_partial_stream(tmp_path):
    path = tmp_path / "trace.arrow"
    p = subprocess.run([PY, "-c", HARD_KILL.format(tests=str(ROOT / "tests"), path=str(path))],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    rows = int(p.stdout)
    partial = T.partial_path(path)
    assert not path.exists() and partial.exists()
    with pytest.raises(T.TraceError, match="found trace.arrow.partial"):
        T.read_trace(path)
    t = T.read_trace(partial)
    assert t.num_rows == rows and T.TraceInfo.of(t).metadata["complete"] == "false"
    # A kill in the middle of a batch tears it: the whole batches before it remain.
    torn = tmp_path / "torn.arrow.partial"
    torn.write_bytes(partial.read_bytes()[:-100])
    assert T.read_trace(torn).num_rows == rows - len(t["time_ps"].chunks[-1])


# --- the command line --------------------------------------------------------------------

def test_cli_run_writes_the_trace_beside_the_summary(tmp_path):
    args = ["run", "incast-raw", "--quiet", "--set", "topology.hosts=5", "--set", "workload.0.senders=4",
            "--set", "workload.0.size=64KiB"]
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "a"), "--trace", "hop", "--trace-compression", "lz4",
                                           "--trace-event", "deliver"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    t = T.read_trace(tmp_path / "a" / "trace.arrow")
    assert set(t["event"].to_pylist()) == {"deliver"} and t.num_rows == summary["packets_delivered"]
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "b"), "--trace", "off"])
    assert res.exit_code == 0 and not (tmp_path / "b" / "trace.arrow").exists()
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "c"), "--trace-node", "sw0"])
    assert res.exit_code == 2 and "need a trace level" in res.output
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "c"), "--trace", "hop", "--trace-node", "sw9"])
    assert res.exit_code == 2 and "no node 'sw9'" in res.output
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "c"), "--trace", "hop", "--trace-flow", "99"])
    assert res.exit_code == 2 and "flows 0..3" in res.output


def test_cli_ctrl_c_finishes_the_trace_incomplete_and_writes_the_summary(tmp_path):
    out = tmp_path / "run"
    # Big enough to still run when the signal comes; a small ring drains often.
    cmd = [str(Path(PY).parent / "ethlink"), "run", "incast-raw", "-o", str(out), "--quiet", "--trace", "hop",
           "--set", "workload.0.size=256MiB", "--set", "run.trace_capacity=1024"]
    # A shell may start children with SIGINT ignored; Ctrl-C needs the default handler.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = out / "trace.arrow.partial"
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size > 50_000):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    summary = json.loads((out / "summary.json").read_text())
    t = T.read_trace(out / "trace.arrow")
    md = T.TraceInfo.of(t).metadata
    assert md["complete"] == "false" and "interrupted" in md["incomplete_reason"]
    assert not partial.exists()
    assert summary["stop"] == "interrupted" and summary["flows_completed"] < summary["flows_total"]
    # The trace holds every event up to the interrupt: it agrees with the summary.
    assert ev(t, "tx_start").sum() == summary["packet_hops"] > 0
    assert ev(t, "deliver").sum() == summary["packets_delivered"]
    # ... and so do the result tables, complete so far
    import pyarrow.parquet as pq
    flows = pq.read_table(out / "flows.parquet")
    assert flows.num_rows == summary["flows_total"]
    assert flows["finish_ps"].null_count == summary["flows_total"] - summary["flows_completed"]
    assert sum(pq.read_table(out / "ports.parquet")["tx_frames"].to_pylist()) == summary["packet_hops"]


def test_an_event_that_writes_more_than_the_margin_grows_the_ring(tmp_path):
    """8 GPUs with 600 tags start 600 loads each in their first event: 1800 rows (issue,
    txn, enqueue) per event against a 1024-row ring. No row is lost and the batches keep
    the configured size except where one event overfilled it."""
    sc = ethlink.scenarios.load("ls-efficiency", ["ls.tags=600", "loadstore.0.ops=700", "run.trace_capacity=1024",
                                                  "loadstore.0.mix={load=1.0}"])
    sim = ethlink.Simulation(sc, trace="endpoints")
    sizes = []
    with T.TraceWriter.for_simulation(sim, tmp_path / "t.arrow") as w:
        res = sim.run(trace_sink=lambda r: (sizes.append(len(r)), w.write(r)))
    t = T.read_trace(tmp_path / "t.arrow")
    ev = T.codes(t, "event")
    assert res.summary["ls"]["count"] == 8 * 700
    for name in ("op_issue", "op_complete"):
        assert int((ev == T.EVENT_NAMES.index(name)).sum()) == 8 * 700
    assert int((ev == T.EVENT_NAMES.index("txn")).sum()) == 2 * 8 * 700       # request and response
    assert max(sizes) >= 1800 > 1024 and t.num_rows == sum(sizes)
