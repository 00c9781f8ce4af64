"""ethlink.tracepcap and the `pcap` / `show` commands: trace rows -> frames -> pcap.

Every frame kind the trace can name is mapped and decoded back through scapy (rows made
by hand, since the engine sends only raw frames yet); a real run's port capture is read
by an independent pcap parser and, where installed, by tshark.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from scapy.contrib.mac_control import MACControlClassBasedFlowControl
from scapy.layers.inet import IP
from scapy.layers.l2 import Dot1Q, Ether

import ethlink
from ethlink import frames as fr
from ethlink import trace as T
from ethlink import tracepcap as TP
from ethlink.cli import main
from ethlink.frames import fields as F


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A traced 4:1 star incast (hop level, zstd) and its trace."""
    out = tmp_path_factory.mktemp("pcap")
    sc = ethlink.Scenario.from_dict({
        "name": "pcap-incast", "seed": 3,
        "topology": {"kind": "star", "hosts": 5, "rate": "100G", "delay": "100ns"},
        "switch": {"buffer": "64KiB", "threshold": "static"},
        "workload": [{"kind": "incast", "receiver": "h0", "size": "200KiB"}],
    })
    sim = ethlink.Simulation(sc, trace="hop")
    with T.TraceWriter.for_simulation(sim, out / "trace.arrow") as w:
        sim.run(trace_sink=w.write)
    table = T.read_trace(out / "trace.arrow")
    return out / "trace.arrow", table, T.TraceInfo.of(table)


# --- the mapping, kind by kind --------------------------------------------------------

def _info() -> T.TraceInfo:
    """Two hosts (n0, n1) on a switch (sw): ports 0,1 at sw; port 2 at n0, 3 at n1."""
    md = {"schema_version": "1", "scenario": "x", "seed": "1", "ethlink_version": "0", "trace_level": "hop",
          "complete": "true", "nodes": json.dumps(["sw", "n0", "n1"]),
          "ports": json.dumps({"node": [0, 0, 1, 2], "peer": [2, 3, 0, 1]})}
    return T.TraceInfo.of(T.TRACE_SCHEMA.with_metadata(md))


def _row(**kw) -> dict:
    row = dict(time_ps=1_234_567, pkt=9, qbytes=0, addr=0, node=0, port=1, flow=0, src=0, dst=1, size=64,
               payload=0, psn=0, event="tx_start", kind="raw", prio=0, ecn=0, reason="none", opcode=0, flags=0)
    row.update(kw)
    return row


def _decode(row):
    f = TP.frame_row(row, _info())
    raw = fr.build_frame(f)
    assert len(raw) == row["size"] - F.FCS_BYTES
    return f, Ether(raw)


def test_every_frame_kind_has_a_mapping():
    assert set(TP.KIND_FRAMES) == set(T.FRAME_KINDS) == set(TP.MISSING_FIELDS)
    assert {k.value for k in TP.KIND_FRAMES.values()} == {k.value for k in F.FrameKind}


def test_raw_frame_addresses_follow_the_link_and_its_direction():
    _, pkt = _decode(_row(kind="raw", size=1046, payload=1024, prio=5))
    assert (pkt.src, pkt.dst) == ("02:00:00:00:00:01", "02:00:00:00:00:03")   # port 1 -> its peer, port 3
    assert pkt[Dot1Q].prio == 5 and pkt[Dot1Q].type == F.EtherType.LOCAL_EXP2
    _, pkt = _decode(_row(kind="raw", size=1046, event="rx", port=3, node=2))
    assert (pkt.src, pkt.dst) == ("02:00:00:00:00:01", "02:00:00:00:00:03")   # received at 3 from 1
    f = TP.frame_row(_row(event="drop", port=-1), _info())
    assert "src_mac" not in f and "dst_mac" not in f


def test_roce_write_maps_ips_psn_opcode_ecn_and_reth():
    op = F.RoceOpcode.WRITE_ONLY
    size = F.roce_frame_bytes(op, 1022, 2)
    f, pkt = _decode(_row(kind="roce", opcode=op, payload=1022, size=size, psn=0x1234567, addr=0xABC000,
                          ecn=2, prio=3, src=4, dst=7))
    assert f["pad_cnt"] == 2
    assert (pkt[IP].src, pkt[IP].dst) == ("10.0.0.5", "10.0.0.8")
    assert pkt[IP].tos & 3 == 2 and pkt[Dot1Q].prio == 3
    assert pkt[fr.BTH].opcode == op and pkt[fr.BTH].psn == 0x234567    # 24-bit PSN
    assert pkt[fr.RETH].va == 0xABC000


def test_roce_ack_and_cnp_are_roce_frames():
    _, pkt = _decode(_row(kind="roce_ack", opcode=F.RoceOpcode.ACK, size=F.roce_frame_bytes(F.RoceOpcode.ACK), psn=77))
    assert pkt[fr.BTH].opcode == F.RoceOpcode.ACK and pkt[fr.BTH].psn == 77 and pkt.haslayer(fr.AETH)
    _, pkt = _decode(_row(kind="cnp", size=F.roce_frame_bytes(F.RoceOpcode.CNP), src=1, dst=0))
    assert pkt[fr.BTH].opcode == F.RoceOpcode.CNP and pkt[fr.BTH].becn == 1 and pkt[IP].dst == "10.0.0.1"


def test_pfc_pauses_the_rows_class():
    _, pkt = _decode(_row(kind="pfc", size=64, prio=3))
    pfc = pkt[MACControlClassBasedFlowControl]
    assert pkt.dst == "01:80:c2:00:00:01" and pkt.src == "02:00:00:00:00:01"
    assert [getattr(pfc, f"c{i}_enabled") for i in range(8)] == [0, 0, 0, 1, 0, 0, 0, 0]


def test_ethlink_store_and_cbfc():
    size = F.ethlink_frame_bytes([(F.ElOpcode.STORE, 256)])
    _, pkt = _decode(_row(kind="ethlink", opcode=F.ElOpcode.STORE, payload=256, size=size, addr=0x4000,
                          psn=0x10042, src=2, dst=3, prio=1))
    base, txn = pkt[fr.ELBase], pkt[fr.ELTxn]
    assert (base.src, base.dst, base.tc, base.ntx) == (2, 3, 1, 1)
    assert (txn.opcode, txn.addr, txn.length, txn.tag) == (F.ElOpcode.STORE, 0x4000, 256, 0x0042)
    _, pkt = _decode(_row(kind="cbfc", size=64, prio=6))
    assert pkt[fr.ELCredit].vc == 6 and pkt[fr.ELBase].flags & F.ElFlags.CTRL


# --- a real run's capture ----------------------------------------------------------------

def _read_pcap(path):
    """(ns timestamp, captured length, original length) of each record: libpcap format."""
    data = path.read_bytes()
    magic, = struct.unpack_from("<I", data)
    assert magic == 0xA1B23C4D                 # nanosecond resolution
    out, off = [], 24
    while off < len(data):
        sec, nsec, incl, orig = struct.unpack_from("<IIII", data, off)
        out.append((sec * 10**9 + nsec, incl, orig))
        off += 16 + incl
    return out


def test_cli_pcap_of_a_port_has_its_transmissions(run, tmp_path):
    path, table, info = run
    port = info.port_of("sw0", 0)
    assert info.port_name(int(info.port_peer[port])) == "h0:0"           # the incast's bottleneck
    out = tmp_path / "sw0-0.pcap"
    res = CliRunner().invoke(main, ["pcap", str(path), "-o", str(out), "--node", "sw0", "--port-index", "0"])
    assert res.exit_code == 0, res.output
    rows, _ = TP.select(table, ports=[port], events=["tx_start"])
    recs = _read_pcap(out)
    assert len(recs) == rows.num_rows > 50
    assert [r[0] for r in recs] == (rows["time_ps"].to_numpy() // 1000).tolist()
    assert [r[1] for r in recs] == [r[2] for r in recs] == (rows["size"].to_numpy() - 4).tolist()
    # --port gives the same capture; --flow and --limit narrow it.
    flow2 = (rows["flow"].to_numpy() == 2).sum()
    assert flow2 > 0
    res = CliRunner().invoke(main, ["pcap", str(path), "-o", str(tmp_path / "b.pcap"), "--port", str(port),
                                    "--flow", "2", "--limit", "3"])
    assert res.exit_code == 0, res.output
    assert len(_read_pcap(tmp_path / "b.pcap")) == min(3, flow2)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_capture_without_malformed_frames(run, tmp_path):
    path, table, info = run
    out = tmp_path / "h1.pcap"
    res = CliRunner().invoke(main, ["pcap", str(path), "-o", str(out), "--node", "h1", "--port-index", "0"])
    assert res.exit_code == 0, res.output
    p = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.len", "-e", "eth.src",
                        "-e", "eth.dst", "-e", "vlan.priority", "-e", "_ws.malformed"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [ln.split("\t") for ln in p.stdout.splitlines()]
    port = info.port_of("h1", 0)
    rows, _ = TP.select(table, ports=[port], events=["tx_start"])
    assert len(lines) == rows.num_rows > 0
    assert all(m == "" for *_, m in lines)                               # no malformed frames
    assert [int(ln[0]) for ln in lines] == (rows["size"].to_numpy() - 4).tolist()
    assert {(ln[1], ln[2], ln[3]) for ln in lines} == {
        (fr.build._mac(fr.mac_of_port(port)), fr.build._mac(fr.mac_of_port(int(info.port_peer[port]))), "0")}


# --- errors and show ---------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--port", "0", "--node", "sw0", "--port-index", "0"], "not both"),
    ([], "choose a capture point"),
    (["--node", "sw0"], "choose a capture point"),
    (["--port", "999"], "this trace has ports 0.."),
    (["--node", "sw1", "--port-index", "0"], "no node 'sw1' in this trace (did you mean sw0"),
    (["--node", "h1", "--port-index", "3"], "node h1 has ports 0..0, not 3"),
    (["--port", "0", "--event", "send"], "no such event"),
])
def test_cli_pcap_rejects_bad_capture_points(run, tmp_path, args, message):
    res = CliRunner().invoke(main, ["pcap", str(run[0]), "-o", str(tmp_path / "x.pcap"), *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "x.pcap").exists()


def test_cli_reports_bad_trace_files(tmp_path):
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    for cmd in (["pcap", str(junk), "-o", str(tmp_path / "x.pcap"), "--port", "0"], ["show", str(junk)]):
        res = CliRunner().invoke(main, cmd)
        assert res.exit_code == 2 and f"{junk}: not an Arrow IPC file" in res.output, res.output
    res = CliRunner().invoke(main, ["show", str(tmp_path / "missing.arrow")])
    assert res.exit_code == 2 and "no such trace file" in res.output


def test_cli_show_prints_decoded_rows(run):
    path, table, info = run
    res = CliRunner().invoke(main, ["show", str(path), "--row", "1"])
    assert res.exit_code == 0, res.output
    r = table.slice(1, 1).to_pylist()[0]
    assert res.output.startswith(f"row 1: ") and f"{r['event']} at {info.nodes[r['node']]}" in res.output
    assert "###[ Ethernet ]###" in res.output and "###[ 802.1Q ]###" in res.output
    assert f"... ({r['payload']} B)" in res.output                       # long payloads are cut
    res = CliRunner().invoke(main, ["show", str(path), "--event", "drop", "--node", "sw0", "--limit", "3", "--brief"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 3 and all(re.search(r"drop reason \w+ at sw0 ", ln) and "Ether / 802.1q" in ln for ln in lines)
    res = CliRunner().invoke(main, ["show", str(path), "--flow", "0", "--event", "drop", "--node", "h0"])
    assert res.exit_code == 1 and "no rows match" in res.output
    res = CliRunner().invoke(main, ["show", str(path), "--row", str(table.num_rows)])
    assert res.exit_code == 2 and f"rows 0..{table.num_rows - 1}" in res.output
    res = CliRunner().invoke(main, ["show", str(path), "--row", "0", "--flow", "1"])
    assert res.exit_code == 2 and "without filters" in res.output


def test_select_combines_filters(run):
    _, table, info = run
    sel, idx = TP.select(table, nodes=[info.node_index("sw0")], events=["enqueue", "drop"], flows=[1], limit=50)
    assert 0 < sel.num_rows <= 50 and (np.diff(idx) > 0).all()
    assert set(sel["event"].to_pylist()) <= {"enqueue", "drop"} and set(sel["flow"].to_pylist()) == {1}
    assert sel.equals(table.take(pa.array(idx)))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_mapped_rows_of_every_kind(tmp_path):
    """Rows of each kind, mapped and built, decode in tshark with nothing malformed."""
    RO, EO = F.RoceOpcode, F.ElOpcode
    rows = [
        _row(kind="raw", size=1046, payload=1024),
        _row(kind="roce", opcode=RO.WRITE_FIRST, payload=1024, size=F.roce_frame_bytes(RO.WRITE_FIRST, 1024),
             addr=0x1000),
        _row(kind="roce", opcode=RO.SEND_ONLY, payload=13, size=F.roce_frame_bytes(RO.SEND_ONLY, 13, 3)),
        _row(kind="roce_ack", opcode=RO.ACK, size=F.roce_frame_bytes(RO.ACK)),
        _row(kind="cnp", size=F.roce_frame_bytes(RO.CNP)),
        _row(kind="pfc", size=64, prio=3),
        _row(kind="ethlink", opcode=EO.STORE, payload=64, size=F.ethlink_frame_bytes([(EO.STORE, 64)])),
        _row(kind="cbfc", size=64, prio=2),
    ]
    out = tmp_path / "kinds.pcap"
    assert fr.write_pcap(out, ((r["time_ps"], fr.build_frame(TP.frame_row(r, _info()))) for r in rows)) == len(rows)
    p = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.protocols", "-e", "_ws.malformed"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [ln.split("\t") for ln in p.stdout.splitlines()]
    assert len(lines) == len(rows) and all(m == "" for _, m in lines)
    assert [("infiniband" in protos) for protos, _ in lines] == [False, True, True, True, True, False, False, False]
    assert "pfc" in lines[5][0] or "macc" in lines[5][0]


# --- a RoCE run with PFC and ECN: every frame kind the engine sends ---------------------

@pytest.fixture(scope="module")
def roce_run(tmp_path_factory):
    sc = ethlink.Scenario.from_dict({
        "name": "roce-pfc", "seed": 1,
        "topology": {"kind": "star", "hosts": 5, "rate": "100G"},
        "switch": {"buffer": "1MiB"},
        "host": {"mtu": 1024},
        "pfc": {"enabled": True, "priorities": [3], "xoff": "64KiB", "headroom": "64KiB"},
        "ecn": {"enabled": True, "priorities": [3], "kmin": "10KiB", "kmax": "50KiB", "pmax": 0.2},
        "workload": [
            {"kind": "incast", "receiver": "h0", "size": "99999B", "transport": "roce", "verb": "write", "prio": 3},
            {"kind": "incast", "receiver": "h1", "senders": [2], "size": "5000B", "transport": "roce",
             "verb": "read", "prio": 3},
        ],
    })
    path = tmp_path_factory.mktemp("roce") / "trace.arrow"
    sim = ethlink.Simulation(sc, trace="hop")
    with T.TraceWriter.for_simulation(sim, path) as w:
        sim.run(trace_sink=w.write)
    table = T.read_trace(path)
    return path, table, T.TraceInfo.of(table)


def test_engine_frames_of_every_kind_and_opcode_rebuild_at_their_traced_size(roce_run):
    """One tx_start row of each (kind, opcode, payload size) the engine sent: the frame
    built from it has the traced length, and its decoded fields are the row's."""
    _, table, info = roce_run
    sel, _ = TP.select(table, events=["tx_start"])
    seen = {}
    for r in TP.rows(sel):
        seen.setdefault((r["kind"], r["opcode"], r["payload"] % 4, r["syndrome"]), r)
    kinds = {k for k, *_ in seen}
    assert {"roce", "roce_ack", "cnp", "pfc"} <= kinds
    for r in seen.values():
        pkt = Ether(fr.build_frame(TP.frame_row(r, info)))     # checks the length against size
        if r["kind"] == "pfc":
            pfc = pkt[MACControlClassBasedFlowControl]
            assert getattr(pfc, f"c{r['prio']}_enabled") == 1
            assert getattr(pfc, f"c{r['prio']}_pause_time") == r["psn"]
            continue
        bth = pkt[fr.BTH]
        assert (bth.psn, bth.dqpn) == (r["psn"] & 0xFFFFFF, fr.QPN_BASE + r["qp"])
        assert (pkt[IP].src, pkt[IP].dst) == (f"10.0.0.{r['src'] + 1}", f"10.0.0.{r['dst'] + 1}")
        if r["kind"] == "roce_ack":
            assert (pkt[fr.AETH].syndrome, pkt[fr.AETH].msn) == (r["syndrome"], r["addr"])
        if pkt.haslayer(fr.RETH):
            assert pkt[fr.RETH].va == r["addr"]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_a_roce_and_pfc_capture(roce_run, tmp_path):
    path, table, info = roce_run
    tx, _ = TP.select(table, events=["tx_start"])
    port = min(p for p, k in zip(tx["port"].to_pylist(), tx["kind"].to_pylist()) if k == "pfc")
    out = tmp_path / "roce.pcap"
    res = CliRunner().invoke(main, ["pcap", str(path), "-o", str(out), "--port", str(port)])
    assert res.exit_code == 0, res.output
    p = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.protocols", "-e", "_ws.malformed"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [ln.split("\t") for ln in p.stdout.splitlines()]
    rows, _ = TP.select(table, ports=[port], events=["tx_start"])
    assert len(lines) == rows.num_rows and all(m == "" for _, m in lines)
    want = ["eth:ethertype:macc" if k == "pfc" else "eth:ethertype:vlan:ethertype:ip:udp:infiniband"
            for k in rows["kind"].to_pylist()]
    assert [protos for protos, _ in lines] == want


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_qp_endpoints_0_and_1_are_data_qps_on_the_wire(roce_run, tmp_path):
    """QP endpoints 0 and 1 go out as DestQP 0x100 and 0x101: on QPs 0 and 1 (the
    management QPs) Wireshark would decode the payload as MADs."""
    _, table, info = roce_run
    sel, _ = TP.select(table, events=["tx_start"])
    sel = sel.filter(pa.array(np.isin(sel["qp"].to_numpy(), [0, 1])
                              & np.isin(T.codes(sel, "kind"), [T.FRAME_KINDS.index(k) for k in ("roce", "roce_ack")])))
    assert set(sel["qp"].to_pylist()) == {0, 1}
    out = tmp_path / "qp01.pcap"
    fr.write_pcap(out, TP.frames(sel, info, context=table))
    p = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "infiniband.bth.destqp",
                        "-e", "frame.protocols", "-e", "_ws.malformed"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [ln.split("\t") for ln in p.stdout.splitlines()]
    assert [int(q, 0) for q, _, _ in lines] == [fr.QPN_BASE + q for q in sel["qp"].to_pylist()]
    assert all(protos.endswith(":infiniband") and m == "" for _, protos, m in lines)
