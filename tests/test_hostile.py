"""Hostile input and faults (issue 10): every entry point refuses what it cannot run with
the project's own error naming the field, never a traceback, a crash or a silently wrong
run; damaged traces raise TraceError only; signals and failed outputs leave marked
results. A regression test per case the issue lists, then bounded fuzzing: hypothesis
scenarios and --set values, byte-mutated traces and workload tables (the trace fuzzing
runs in a subprocess under faulthandler, so a crash of the reader is a failure here, not
a dead test process).
"""
from __future__ import annotations

import copy
import errno
import json
import re
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ethlink
from ethlink import budget, scenarios
from ethlink import trace as T
from ethlink.cli import main
from ethlink.replay import as_workload, load_workload
from ethlink.scenario import MAX_SIZE_BYTES, MAX_TIME_PS, Scenario, ScenarioError
from ethlink.sim import build_fabric, compile_scenario
from ethlink.sweep import SweepError
from ethlink.workloads import from_table

ETHLINK = Path(sys.executable).with_name("ethlink")
BASE = {"seed": 1, "topology": {"kind": "star", "hosts": 4},
        "flow": [{"src": "h0", "dst": "h1", "size": 1000}],
        "workload": [{"kind": "incast", "receiver": "h0", "senders": 3, "size": 4096}],
        "loadstore": [{"gpus": ["h0", "h1"], "ops": 10, "mode": "open", "rate": 1e6}]}


def error_of(overrides=(), data=None) -> str:
    with pytest.raises(ScenarioError) as exc:
        Scenario.from_dict(copy.deepcopy(data or BASE), list(overrides))
    return str(exc.value)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line(r) -> str:
    lines = [x for x in r.output.splitlines() if x.strip() and not x.startswith(("Usage:", "Try "))]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


# ---------------------------------------------------------------------------------------
# Scenario values: finite, bounded, named.

@pytest.mark.parametrize("override,field", [
    ("pfc.alpha=nan", "pfc.alpha"), ("switch.alpha=nan", "switch.alpha"), ("topology.rate=nan", "topology.rate"),
    ("switch.latency=inf", "switch.latency"), ("ecn.pmax=nan", "ecn.pmax"), ("link.ber=nan", "link.ber"),
    ("dcqcn.g=nan", "dcqcn.g"), ("loadstore.0.rate=nan", "loadstore[0].rate"),
    ("topology.oversubscription=-inf", "topology.oversubscription"), ("switch.alpha=1e400", "switch.alpha"),
    ("loadstore.0.mix={load=nan}", "loadstore[0].mix.load"), ("workload.0.size=inf", "workload[0].size")])
def test_nan_and_infinity_are_refused_naming_the_field(override, field):
    msg = error_of([override])
    assert msg.startswith(field) and "finite" in msg, msg


@pytest.mark.parametrize("override,field,needle", [
    ("topology.delay=1e20s", "topology.delay", "at most 1e6 s"),
    ("run.until=1e30s", "run.until", "at most 1e6 s"),
    ("flow.0.start=1e19", "flow[0].start", "at most"),
    ("workload.0.size=1e18", "workload[0].size", "at most 1 TiB"),
    ("switch.buffer=2e12", "switch.buffer", "at most 1 TiB"),
    ("seed=1e400", "seed", "integer"),
    ("ls_op=[{src=0,dst=1,addr=9223372036854775808}]", "ls_op[0].addr", "64-bit"),
    ("seed.x=1", "--set seed.x", "seed is a value (1), not a table"),
    ("topology.hosts.x=1", "--set topology.hosts.x", "not a table"),
    ("workload.0.senders=[\"h1\",\"h1\"]", "workload[0].senders", "h1 is listed more than once"),
    ("workload.0.stagger=6e17", "workload[0].stagger", "after the longest simulated time"),
    ("loadstore.0.rate=1e-8", "loadstore[0].rate", "at least")])
def test_out_of_range_values_name_the_field_and_the_fix(override, field, needle):
    msg = error_of([override])
    assert msg.startswith(field) and needle in msg, msg


def test_the_bounds_themselves_are_accepted_and_fit_int64():
    # (a cable that long makes every default timer shorter than a round trip: ls.timeout off)
    sc = Scenario.from_dict(BASE, [f"run.until={MAX_TIME_PS}", f"topology.delay={MAX_TIME_PS // 10}", "ls.timeout=0"])
    assert sc.run.until_ps == MAX_TIME_PS and MAX_TIME_PS * 9 < 2**63
    assert MAX_SIZE_BYTES * 8 * 10**12 < 2**127          # bit x ps products of the ideal-time model


def test_an_open_loop_stream_at_the_lowest_rate_that_fits_issues_within_the_horizon():
    """`[[loadstore]] rate = 1e-8` used to overflow to a negative mean wait; the slowest
    rate the message suggests is accepted and its last issue time is within the bound."""
    msg = error_of(["loadstore.0.rate=1e-8"])
    rate = float(msg.split("at least ")[1].split(" ops/s")[0]) * 1.001
    sc = Scenario.from_dict(BASE, [f"loadstore.0.rate={rate}"])
    ops, _ = ethlink.loadstore.build_ops(sc, 4)
    assert 0 <= ops["issue_ps"].min() and ops["issue_ps"].max() <= MAX_TIME_PS


@pytest.mark.parametrize("text,needle", [
    (b"[topology]\nrate = nan\n", "topology.rate: expected a finite rate"),
    (b"[switch]\nalpha = inf\n", "switch.alpha: expected a finite number"),
    (b"name = \"caf\xe9\"\n", "not UTF-8 text (byte 0xe9 on line 1)"),
    ("name = \"x\"\n".encode("utf-16"), "UTF-16"),
    (b"[[a]]\n" + b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid TOML")])
def test_scenario_files_that_cannot_be_read_are_refused_clearly(tmp_path, text, needle):
    p = tmp_path / "s.toml"
    p.write_bytes(text + (b"" if b"nan" not in text and b"inf" not in text else b"[[flow]]\nsrc=0\ndst=1\nsize=64\n"))
    with pytest.raises(ScenarioError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Scenario.from_toml(p)


def test_a_utf8_byte_order_mark_is_skipped(tmp_path):
    p = tmp_path / "s.toml"
    p.write_bytes(b"\xef\xbb\xbf" + scenarios.path("incast-raw").read_bytes())
    assert Scenario.from_toml(p).name == "incast-raw"


# ---------------------------------------------------------------------------------------
# Memory budget.

@pytest.mark.parametrize("topology", [
    {"kind": "star", "hosts": 5}, {"kind": "multiplane-star", "hosts": 4, "planes": 3},
    {"kind": "leaf-spine", "leaves": 3, "hosts_per_leaf": 2, "spines": 2},
    {"kind": "leaf-spine", "leaves": 2, "hosts_per_leaf": 4, "oversubscription": 2.0},
    {"kind": "ring", "switches": 4, "hosts_per_switch": 3}, {"kind": "fat-tree", "k": 6}])
def test_fabric_counts_match_the_built_fabric(topology):
    sc = Scenario.from_dict({"topology": topology, "flow": [{"src": 0, "dst": 1, "size": 64}]})
    fab = build_fabric(sc)
    assert budget.fabric_counts(sc) == (fab.n_nodes, len(fab.ports().node), fab.n_hosts)


@pytest.mark.parametrize("name,overrides", [
    ("permutation-leafspine", []), ("alltoall-fattree", ["topology.k=6"]),
    ("incast-pfc", ["workload.0.senders=2", "workload.0.size=64MiB"]), ("incast-pfc", ["topology.hosts=600"])])
def test_the_memory_estimate_is_within_a_small_factor_of_what_compile_allocates(name, overrides):
    sc = scenarios.load(name, overrides)
    tracemalloc.start()
    try:
        compile_scenario(sc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.8 * peak <= sum(budget.estimate(sc).values()) <= 3 * peak


@pytest.mark.parametrize("overrides,part", [
    (["topology.hosts=1048576"], "ports"), (["topology.kind=\"fat-tree\"", "topology.k=128"], "routing"),
    (["workload.0.size=1e12"], "frames"), (["workload=[{kind=\"alltoall\",size=64}]", "topology.hosts=4096"], "flows")])
def test_a_scenario_beyond_the_memory_available_is_refused_with_the_figure(overrides, part):
    """Checked against a given 1 GiB, so the result does not depend on this machine."""
    big = _unchecked(Scenario.from_dict, BASE, overrides)
    with pytest.raises(ScenarioError, match=rf"needs about [\d,.]+ GiB of memory \({part}: [\d,.]+ GiB\), "
                                            r"more than the 1.0 GiB available; use "):
        budget.check(big, available=2**30)
    small = Scenario.from_dict(BASE)
    assert budget.check(small, available=2**30) == sum(budget.estimate(small).values()) < 2**30


def _unchecked(fn, *args):
    """fn(*args) without the memory check (which would refuse the scenario here)."""
    saved = budget.check
    budget.check = lambda sc, available=None, parts=None: 0
    try:
        return fn(*args)
    finally:
        budget.check = saved


# ---------------------------------------------------------------------------------------
# Workload tables.

@pytest.mark.parametrize("column,value,needle", [
    ("bytes", 1e17, "bytes must be at most"), ("bytes", math.inf, "bytes"), ("time_ps", 2e18, "time_ps must be in"),
    ("time_ps", math.nan, "time_ps")])
def test_workload_tables_are_bounded_like_scenarios(column, value, needle):
    table = {"id": [0, 1], "time_ps": [0, 0], "src": [0, 1], "dst": [1, 0], "op": ["raw", "raw"],
             "bytes": [64, 64], "prio": [0, 0]}
    table[column] = [table[column][0], value]
    with pytest.raises(ScenarioError, match=needle):
        from_table(as_workload(table) if not isinstance(value, float) or math.isfinite(value) else table, 4)


def test_a_replayed_op_of_1e17_bytes_is_refused_before_anything_is_allocated(tmp_path):
    wl = tmp_path / "w.csv"
    wl.write_text("id,time_ps,src,dst,op,bytes,prio\n0,0,0,1,write,100000000000000000,0\n")
    r = invoke("replay", wl, "--fabric", "incast-pfc", "-o", tmp_path / "out")
    assert r.exit_code == 2 and "GiB of memory (frames: " in one_line(r)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# The command line: exit 2 and nothing written; outputs that fail: exit 1, one line.

@pytest.mark.parametrize("args,needle", [
    (["--set", "pfc.alpha=nan"], "pfc.alpha: expected a finite number"),
    (["--until", "1e30s"], "a stop time is in 0..1e6 s"),
    (["--set", "topology.hosts=1048576", "--set", "workload=[{kind=\"alltoall\",size=64}]"], "GiB of memory"),
    (["--trace-event", "tx_start"], "need a trace level"),
    (["--trace", "hop", "--trace-flow", "99"], "this scenario has flows")])
def test_run_refuses_bad_input_with_exit_2_and_writes_nothing(tmp_path, args, needle):
    r = invoke("run", "incast-pfc", "-o", tmp_path / "out", "--quiet", *args)
    assert r.exit_code == 2 and needle in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["show", "--pkt", str(2**70)], ["show", "--flow", str(2**40)],
                                  ["show", "--row", str(2**70)], ["show", "--port", str(2**70)],
                                  ["pcap", "-o", "x.pcap", "--port", "0", "--flow", str(2**40)],
                                  ["pcap", "-o", "x.pcap", "--node", "sw0", "--port-index", str(2**70)]])
def test_huge_filter_values_are_bad_input_not_an_overflow(tmp_path, small_trace, args):
    r = invoke(args[0], small_trace, *[a.replace("x.pcap", str(tmp_path / "x.pcap")) for a in args[1:]])
    assert r.exit_code == 2 and "Traceback" not in r.output and not (tmp_path / "x.pcap").exists(), r.output


def test_pcap_into_a_missing_directory_is_one_line_naming_it(tmp_path, small_trace):
    r = invoke("pcap", small_trace, "-o", tmp_path / "no" / "x.pcap", "--port", 0)
    assert r.exit_code == 1
    assert one_line(r) == f"Error: cannot write {tmp_path / 'no' / 'x.pcap'}: no directory {tmp_path / 'no'}"


def test_a_full_disk_during_a_run_is_one_line_naming_outdir_and_the_trace_stays_partial(tmp_path, monkeypatch):
    """ENOSPC simulated: the trace writer's batch write raises it (a tiny tmpfs needs root)."""
    def full(self, recs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(T.TraceWriter, "_write", full)
    out = tmp_path / "out"
    r = invoke("run", "incast-pfc", "-o", out, "--quiet", "--trace", "hop", "--set", "workload.0.senders=4",
               "--set", "workload.0.size=256KiB", "--set", "run.trace_capacity=1024")   # fails mid-run
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().endswith(f"Error: cannot write {out}: no space left on the device (disk full)")
    assert not (out / "trace.arrow").exists() and not (out / "summary.json").exists()
    assert T.TraceInfo.of(T.read_trace(out / "trace.arrow.partial")).metadata["complete"] == "false"


def test_a_full_disk_when_writing_a_workload_leaves_no_file(tmp_path, monkeypatch, small_trace):
    import pyarrow.csv as pcsv

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(pcsv, "write_csv", full)
    r = invoke("workload", small_trace, "-o", tmp_path / "w.csv")
    assert r.exit_code == 1 and one_line(r).endswith("w.csv: no space left on the device (disk full)")
    assert os.listdir(tmp_path) == []


def test_ctrl_c_while_the_scenario_compiles_is_one_line_and_130(tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(ethlink.sim.Simulation, "__init__", interrupted)
    r = invoke("run", "incast-pfc", "-o", tmp_path / "out", "--quiet")
    assert r.exit_code == 130 and one_line(r) == "interrupted" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_the_results_like_ctrl_c(tmp_path, signum):
    """The run is long enough to be stopped mid-way (a 2 GiB flow); the signal is sent once
    the trace has a batch on disk."""
    out = tmp_path / "out"
    p = subprocess.Popen([str(ETHLINK), "run", "incast-raw", "-o", str(out), "--quiet", "--trace", "endpoints",
                          "--set", "workload.0.senders=2", "--set", "workload.0.size=2GiB"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = out / "trace.arrow.partial"
    while p.poll() is None and not (partial.exists() and partial.stat().st_size > 10_000):
        time.sleep(0.05)
    p.send_signal(signum)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert f"interrupted ({name})" in err and "Traceback" not in err
    assert json.loads((out / "summary.json").read_text())["stop"] == "interrupted"
    md = T.TraceInfo.of(T.read_trace(out / "trace.arrow")).metadata
    assert md["complete"] == "false" and md["incomplete_reason"] == f"interrupted ({name})"


def test_sigterm_stops_a_sweep_like_ctrl_c(tmp_path):
    """Two long points on one process: SIGTERM once the first point's files exist ends the
    sweep with the finished points listed in sweep.csv and exit 143."""
    out = tmp_path / "sw"
    p = subprocess.Popen([str(ETHLINK), "sweep", "incast-raw", "-o", str(out), "--quiet", "--jobs", "1",
                          "--grid", "workload.0.size=64KiB,64GiB", "--set", "workload.0.senders=2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while p.poll() is None and not list(out.glob("0-*/summary.json")) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert (out / "sweep.csv").read_text().count("\n") == 2          # header and the finished point


# ---------------------------------------------------------------------------------------
# Traces: structure, indices, counts.

@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    """A hop-level trace of several batches (trace_capacity 1024)."""
    path = tmp_path_factory.mktemp("small") / "trace.arrow"
    sim = ethlink.Simulation(scenarios.load("incast-pfc", ["workload.0.senders=4", "workload.0.size=256KiB",
                                                           "run.trace_capacity=1024"]), trace="hop")
    with T.TraceWriter.for_simulation(sim, path, compression="none") as w:
        sim.run(trace_sink=w.write)
    assert w.batches >= 3
    return path


def _rewrite(src: Path, dst: Path, table: pa.Table, drop=(), **md) -> Path:
    """`table` written as an Arrow file with `src`'s metadata, keys `drop` removed, `md` set."""
    meta = {k.decode(): v.decode() for k, v in T.read_trace(src).schema.metadata.items()}
    meta = {k: v for k, v in {**meta, **md}.items() if k not in drop}
    with pa.ipc.new_file(str(dst), table.schema.with_metadata(meta)) as w:
        w.write_table(table)
    return dst


def _with_column(table: pa.Table, name: str, fn) -> pa.Table:
    col = table[name].to_numpy().copy()
    fn(col)
    return table.set_column(table.schema.get_field_index(name), table.schema.field(name), pa.array(col))


COUNTS = ("rows", "batches", "batch_rows", "checksum")


@pytest.mark.parametrize("case,needle", [
    ("third_deleted", "missing rows: the metadata says"),
    ("rebatched", "differs from the metadata's row counts"),
    ("time_altered", "checksum mismatch"),
    ("reordered", "time_ps goes back"),
    ("negative_time", "time_ps=-5 is outside"),
    ("node", "node=99 is outside 0..1"),
    ("port", "port=9999 is outside"),
    ("flow", "flow=4 is outside -1..3"),
    ("prio", "prio=9 is outside 0..7"),
    ("size", "size=-1 is outside"),
    ("ports_metadata", "corrupted metadata"),
    ("version", "trace schema version 9")])
def test_a_damaged_but_valid_arrow_trace_is_refused(tmp_path, small_trace, case, needle):
    t = T.read_trace(small_trace)
    n_nodes = len(T.TraceInfo.of(t).nodes)
    dst = tmp_path / "bad.arrow"
    if case == "third_deleted":
        _rewrite(small_trace, dst, t.slice(0, 2 * t.num_rows // 3))
    elif case == "rebatched":
        _rewrite(small_trace, dst, t.combine_chunks())
    elif case == "time_altered":
        _rewrite(small_trace, dst, _with_column(t, "time_ps", lambda c: c.__setitem__(-1, c[-1] + 1)))
    elif case == "reordered":
        _rewrite(small_trace, dst, t.take(np.r_[1:t.num_rows // 2, 0, t.num_rows // 2:t.num_rows]), drop=COUNTS)
    elif case == "negative_time":
        _rewrite(small_trace, dst, _with_column(t, "time_ps", lambda c: c.__setitem__(0, -5)), drop=COUNTS)
    elif case in ("node", "port", "flow", "prio", "size"):
        value = {"node": 99, "port": 9999, "flow": 4, "prio": 9, "size": -1}[case]
        _rewrite(small_trace, dst, _with_column(t, case, lambda c: c.__setitem__(7, value)), drop=COUNTS)
        needle = needle.replace("0..1", f"0..{n_nodes - 1}")
    elif case == "ports_metadata":
        _rewrite(small_trace, dst, t, ports=json.dumps({"node": [0, n_nodes], "peer": [1, 0]}))
    else:
        _rewrite(small_trace, dst, t, schema_version="9")
    with pytest.raises(T.TraceError, match=needle.replace("(", r"\(")):
        T.read_trace(dst)
    for cmd in (["show", dst], ["plot", dst, "-o", tmp_path / "p"], ["pcap", dst, "-o", tmp_path / "x.pcap", "--port", 0],
                ["workload", dst, "-o", tmp_path / "w.csv"], ["replay", dst, "--fabric", "incast-pfc", "-o", tmp_path / "r"]):
        r = invoke(*cmd)
        assert r.exit_code == 2 and "Traceback" not in r.output, (cmd, r.output)
    assert sorted(os.listdir(tmp_path)) == ["bad.arrow"]


def test_show_on_a_trace_without_rows_says_so(tmp_path, small_trace):
    t = T.read_trace(small_trace)
    dst = _rewrite(small_trace, tmp_path / "empty.arrow", t.slice(0, 0), drop=COUNTS)
    r = invoke("show", dst)
    assert r.exit_code == 0 and "the trace has no rows (trace level hop)" in r.output


def test_show_without_filters_prints_the_first_frames_from_the_first_batches(small_trace, monkeypatch):
    """`show TRACE` skips the operation rows that open a trace and prints the first frames,
    rebuilt; it reads the first batch, not the whole trace (read_trace is not called)."""
    t = T.read_trace(small_trace)
    ev = t["event"].to_pylist()
    frames = [i for i, e in enumerate(ev) if e not in ("op_issue", "op_complete", "txn")][:4]
    assert frames[0] > 0                                       # the trace opens with operation rows
    monkeypatch.setattr(T, "read_trace", lambda *a: pytest.fail("show read the whole trace"))
    r = invoke("show", small_trace, "--limit", 4, "--brief")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    shown = [int(ln.split(":")[0].split()[1]) for ln in lines if ln.startswith("row ")]
    assert shown == frames
    assert "frame not rebuilt" not in r.output and all(" | Ether" in ln for ln in lines if ln.startswith("row "))
    assert f"the first 4 frames (rows {frames[0]}..{frames[-1]} of {t.num_rows:,})" in lines[0]
    head, whole = T.read_trace_head(small_trace, lambda tab: True)
    assert not whole and head.num_rows == json.loads(t.schema.metadata[b"batch_rows"])[0] < t.num_rows
    assert head.equals(t.slice(0, head.num_rows))
    everything, whole = T.read_trace_head(small_trace, lambda tab: False)
    assert whole and everything.equals(t)


def test_show_checks_the_rest_of_the_file_on_two_columns(tmp_path, small_trace):
    """A row altered in the last batch (never read whole by show): the checksum of the
    time_ps and pkt columns still catches it."""
    t = T.read_trace(small_trace)
    dst = _rewrite(small_trace, tmp_path / "bad.arrow", _with_column(t, "pkt", lambda c: c.__setitem__(-1, c[-1] + 1)))
    r = invoke("show", dst, "--limit", 1)
    assert r.exit_code == 2 and "checksum mismatch" in r.output, r.output


def test_the_writer_records_batch_rows_and_the_checksum_of_what_it_wrote(small_trace):
    t = T.read_trace(small_trace)
    md = T.TraceInfo.of(t).metadata
    assert json.loads(md["batch_rows"]) == [len(c) for c in t["time_ps"].chunks]
    assert md["checksum"] == f"{T.row_checksum(t['time_ps'].to_numpy(), t['pkt'].to_numpy()):016x}"
    assert int(md["flows"]) == 4 and int(md["rows"]) == t.num_rows


FUZZ_TRACE = textwrap.dedent("""
    import faulthandler, random, sys, collections
    faulthandler.enable()
    from ethlink import trace as T
    src = open(sys.argv[1], "rb").read()
    rng = random.Random(int(sys.argv[2]))
    seen = collections.Counter()
    for i in range(int(sys.argv[3])):
        b = bytearray(src)
        for _ in range(rng.choice([1, 2, 8, 32])):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.1:
            del b[rng.randrange(len(b)):]
        open(sys.argv[4], "wb").write(b)
        try:
            t = T.read_trace(sys.argv[4])
            info = T.TraceInfo.of(t)
            for p in range(info.n_ports):
                info.describe_port(p)
            [info.nodes[n] for n in t["node"].to_numpy()]
            seen["read"] += 1
        except T.TraceError:
            seen["TraceError"] += 1
        except Exception as exc:
            seen[type(exc).__name__ + ": " + str(exc)[:200]] += 1
    print(dict(seen))
""")


@pytest.mark.parametrize("form,seed", [("none", 1), ("lz4", 2), ("partial", 3)])
def test_byte_mutated_traces_raise_only_trace_error(tmp_path, small_trace, form, seed):
    """A finished file uncompressed or lz4-compressed, or the .partial of a run still going."""
    t = T.read_trace(small_trace)
    if form == "partial":
        sim = ethlink.Simulation(scenarios.load("incast-pfc", ["workload.0.senders=4", "workload.0.size=256KiB",
                                                               "run.trace_capacity=1024"]), trace="hop")
        w = T.TraceWriter.for_simulation(sim, tmp_path / "run" / "trace.arrow")
        sim.run(trace_sink=w.write)
        w.flush()
        src = tmp_path / "src.arrow.partial"
        src.write_bytes(w.partial.read_bytes())
        w.close()
    else:
        src = tmp_path / "src.arrow"
        with pa.ipc.new_file(str(src), t.schema, options=pa.ipc.IpcWriteOptions(
                compression=None if form == "none" else form)) as w:
            for b in t.to_batches():
                w.write_batch(b)
    out = tmp_path / ("m.arrow.partial" if form == "partial" else "m.arrow")
    r = subprocess.run([sys.executable, "-c", FUZZ_TRACE, str(src), str(seed), "400", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]          # a crash shows faulthandler's dump here
    seen = eval(r.stdout)                                # noqa: S307 - our own script's dict
    assert set(seen) <= {"read", "TraceError"}, seen
    assert seen.get("TraceError", 0) > 100


def _mutate(data: bytes, rng) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 3, 10])):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


@pytest.mark.parametrize("suffix", ["csv", "arrow"])
def test_byte_mutated_workload_tables_raise_only_project_errors(tmp_path, suffix):
    import random

    from ethlink.replay import write_workload
    rng = random.Random(7)
    base = tmp_path / f"base.{suffix}"
    write_workload({"id": [0, 1, 2], "time_ps": [0, 1000, 2000], "src": [0, 1, 2], "dst": [1, 2, 3],
                    "op": ["write", "read", "store"], "bytes": [4096, 65536, 64], "prio": [3, 3, 5]}, base)
    data = base.read_bytes()
    seen = set()
    for i in range(150):
        p = tmp_path / f"m{i}.{suffix}"
        p.write_bytes(_mutate(data, rng))
        try:
            from_table(load_workload(p), 4)
            seen.add("ok")
        except (T.TraceError, ScenarioError):
            seen.add("error")
    assert "error" in seen


# ---------------------------------------------------------------------------------------
# Hypothesis: generated scenarios and --set values end in a Scenario or a ScenarioError.

KEYS = ["topology.hosts", "topology.rate", "topology.delay", "topology.kind", "topology.k", "switch.alpha",
        "switch.buffer", "switch.latency", "switch.queue_limit", "pfc.alpha", "pfc.xoff", "ecn.pmax", "ecn.kmin",
        "link.ber", "dcqcn.g", "run.until", "run.trace_capacity", "seed", "host.mtu", "flow.0.size",
        "flow.0.start", "workload.0.senders", "workload.0.size", "loadstore.0.rate", "loadstore.0.ops",
        "loadstore.0.mix", "ls_op", "seed.x", "workload.9.size", "topology", "flow.-1.src"]
VALUES = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e400", "1e30s", "1e20", "-1", "0", "true", "\"h1\"", "[]", "{}",
                     "[\"h1\", \"h1\"]", "\"400G\"", "\"1e3ms\"", "9223372036854775808", "{load=1e308}",
                     "[{src=0,dst=1}]", "\"\\u0000\"", "0x7fffffffffffffff", "1.5", "\"16MiB\""]),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4))
def test_generated_overrides_end_in_a_scenario_or_a_scenario_error(items):
    try:
        sc = Scenario.from_dict(BASE, [f"{k}={v}" for k, v in items])
    except ScenarioError:
        return
    assert sc.run.until_ps <= MAX_TIME_PS and all(f.size <= MAX_SIZE_BYTES for f in sc.flows)
    assert all(math.isfinite(x) for x in (sc.switch.alpha, sc.pfc.alpha, sc.ecn.pmax, sc.link.ber, sc.dcqcn.g))


LEAVES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**66, 2**66), st.floats(), st.text(max_size=8)),
                      lambda inner: st.one_of(st.lists(inner, max_size=3),
                                              st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)
SECTIONS = ["topology", "switch", "host", "ports", "run", "pfc", "ecn", "roce", "dcqcn", "ls", "cbfc", "link"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(SECTIONS + ["flow", "workload", "loadstore", "ls_op", "seed", "name"]),
                       st.one_of(LEAVES, st.dictionaries(st.sampled_from(["hosts", "rate", "alpha", "size", "kind",
                                                                          "latency", "until", "enabled", "g", "ber"]),
                                                         LEAVES, max_size=3)), max_size=4))
def test_generated_scenario_tables_end_in_a_scenario_or_a_scenario_error(extra):
    data = {**copy.deepcopy(BASE), **extra}
    try:
        Scenario.from_dict(data)
    except ScenarioError:
        pass


# ---------------------------------------------------------------------------------------
# The sweep API.

SCRIPT = textwrap.dedent("""
    from pathlib import Path
    from ethlink.sweep import SweepFailed, plan, sweep
    grid = {"workload.0.size": ["4KiB", "8KiB"]}
    out = Path(__file__).parent / "sw"
    points = plan("incast-raw", grid, sets=["workload.0.senders=2"])
    out.mkdir()
    (out / points[1].name).write_text("in the way")     # this point cannot make its directory
    try:
        sweep("incast-raw", out, grid, sets=["workload.0.senders=2"], jobs=1)
    except SweepFailed as exc:
        print("FAILED", sorted(exc.errors), exc.table.num_rows)
""")


def test_the_sweep_api_raises_on_failed_points_and_runs_in_a_script_without_a_main_guard(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "FAILED ['1-workload.0.size=8KiB'] 2", r.stdout
    assert json.loads((tmp_path / "sw" / "0-workload.0.size=4KiB" / "summary.json").read_text())["stop"] == "empty"
    assert issubclass(ethlink.sweep.SweepFailed, RuntimeError) and not issubclass(ethlink.sweep.SweepFailed, SweepError)


# ---------------------------------------------------------------------------------------
# Valid but extreme values: the engine must not hang.

LS_RETRY = textwrap.dedent("""
    import ethlink
    sc = ethlink.Scenario.from_dict({
        "topology": {"kind": "star", "hosts": 4},
        "ls": {"coalesce": 512, "coalesce_wait": "5us", "timeout": "2us"},
        "loadstore": [{"gpus": "all", "ops": 20, "mode": "closed", "mix": {"load": 1, "store_ack": 1}}]})
    sim = ethlink.Simulation(sc)
    ls = sim.run(until=10**9).summary["ls"]
    print(ls["count"], ls["total"], ls["retries"] > 0)
""")


def test_a_retry_of_a_transaction_still_in_its_open_frame_does_not_hang_the_engine():
    """ls.timeout shorter than ls.coalesce_wait: the retry found its transaction still in
    the GPU's open coalesced frame, linked it again and closed the frame's chain into a
    cycle that the engine walked forever (nogil: not even Ctrl-C stopped it)."""
    r = subprocess.run([sys.executable, "-c", LS_RETRY], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["80", "80", "True"]


def test_show_into_a_closed_pipe_stops_quietly(small_trace):
    """`ethlink show TRACE | head -1`: no error message once the reader has left."""
    # 500 decoded frames: far more than a pipe buffer holds, so the writer meets the closed pipe
    p = subprocess.Popen([sys.executable, "-m", "ethlink.cli", "show", str(small_trace), "--limit", "500"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and first.startswith(str(small_trace).encode())
    assert err == "", err


@pytest.mark.parametrize("name,key", [("incast-trim", "uet.rto"), ("incast-pfc", "roce.rto"),
                                      ("ls-idle", "ls.timeout")])
def test_a_timer_shorter_than_any_round_trip_is_refused_naming_it(name, key):
    """A retransmission timer below the fabric's shortest round trip fires before any
    acknowledgement can return (every packet sent again, an event every few ps): refused
    before the run with the floor; the floor itself is accepted."""
    from ethlink import scenarios
    from ethlink.scenario import min_round_trip_ps
    floor = min_round_trip_ps(scenarios.load(name))
    with pytest.raises(ScenarioError, match=rf"^{re.escape(key)}: 1 ps is below the fabric's shortest round trip"):
        scenarios.load(name, [f"{key}=1ps"])
    assert scenarios.load(name, [f"{key}={floor}ps"])
