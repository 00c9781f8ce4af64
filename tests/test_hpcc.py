"""HPCC (Li et al., SIGCOMM 2019; csrc/hpcc.pxd): the sender's window update against
hand-computed values, the INT records switches append and ACKs echo, the incast-hpcc
built-in's properties, and random incasts (conservation, completion, windows in bounds).

Algorithm 1 as csrc/hpcc.pxd states it, replayed by hand below:
  per hop: u = min(qlen, qlen_prev) / (B T) + (tx - tx_prev) / (ts - ts_prev) / B
  U = (1 - tau/T) U + (tau/T) max_hop u   (tau: that hop's ts - ts_prev, at most T; U starts at 1)
  U >= eta or stage >= max_stage: W = Wc eta / U + W_AI, else W = Wc + W_AI
  Wc and stage are committed only by an ACK past the snd_nxt of the last commit.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ethlink import _engine, scenarios
from ethlink import trace as T
from ethlink.scenario import Scenario, ScenarioError
from ethlink.sim import Simulation

from conftest import run_traced

EV = {n: i for i, n in enumerate(T.EVENT_NAMES)}
FK = {n: i for i, n in enumerate(T.FRAME_KINDS)}
PF_INT = 64
US = 1_000_000
G100 = 100 * 10**9
ACK_BYTES = 70                  # Ether 14 + 802.1Q 4 + IPv4 20 + UDP 8 + BTH 12 + AETH 4 + ICRC 4 + FCS 4

# T = 10 us at 100 Gb/s: W_init = 125000 B, the hop's BDP B x T = 125000 B too.
P = dict(eta=0.95, max_stage=5, t_ps=10 * US, w_init=125_000, w_ai=100, w_floor=100, line_bps=G100, mtu=1000)


def hop(ts_us, tx, qlen, rate=G100):
    return (int(ts_us * US), tx, qlen, rate)


def test_window_update_by_hand():
    out = _engine.hpcc_sender([
        (0, 10, [hop(0, 0, 0)]),                # first ACK: only stored as the reference
        (1, 11, [hop(1, 12_500, 25_000)]),      # 12500 B in 1 us = 100 Gb/s; min(qlen) 0
        (10, 20, [hop(2, 18_750, 50_000)]),     # half rate; min(50000, 25000) = 0.2 BDP
        (20, 30, [hop(3, 20_000, 0)]),          # a tenth of the rate, queue gone
    ], **P)
    assert out[0]["w"] == 125_000 and out[0]["last_psn"] == 10 and out[0]["u"] == 1.0
    # ACK 2: u = 1.0, tau = 1 us: U = (1 x 9 + 1.0 x 1) / 10 = 1.0 >= eta:
    # W = 125000 x 0.95 / 1.0 + 100 = 118850; PSN 1 is not past 10: Wc stays
    assert out[1]["u"] == pytest.approx(1.0)
    assert out[1]["w"] == 118_850 and out[1]["wc"] == 125_000 and out[1]["last_psn"] == 10
    assert out[1]["rate_bps"] == 118_850 * 8 * 10**12 // (10 * US)     # R = W / T: 95.08 Gb/s
    # ACK 3: u = 0.5 + 0.2 = 0.7: U = (1.0 x 9 + 0.7) / 10 = 0.97 >= eta:
    # W = int(125000 x 0.95 / 0.97) + 100 = 122422 + 100; past PSN 10: committed
    assert out[2]["u"] == pytest.approx(0.97)
    assert out[2]["w"] == 122_522 and out[2]["wc"] == 122_522 and out[2]["stage"] == 0
    assert out[2]["last_psn"] == 20
    # ACK 4: u = 0.1: U = (0.97 x 9 + 0.1) / 10 = 0.883 < eta, stage 0: additive, W = Wc + 100
    assert out[3]["u"] == pytest.approx(0.883)
    assert out[3]["w"] == 122_622 and out[3]["stage"] == 1


def test_max_stage_forces_a_multiplicative_increase():
    acks = [(0, 10, [hop(0, 0, 0)])]
    for k in range(1, 8):                       # an idle hop: u = 0.1 every 1 us, one ACK per RTT
        acks.append((10 * k, 10 * (k + 1), [hop(k, 1250 * k, 0)]))
    out = _engine.hpcc_sender(acks, **P)[1:]
    u = 1.0
    for k in range(5):                          # U = 0.9 U + 0.01: 0.91, 0.829, ...: below eta
        u = 0.9 * u + 0.01
        assert out[k]["u"] == pytest.approx(u)
    # U = 0.91 at the first update (< 0.95): additive steps from 125000 up to maxStage = 5
    assert [o["stage"] for o in out[:5]] == [1, 2, 3, 4, 5]
    assert [o["w"] for o in out[:5]] == [125_000] * 5       # capped at W_init
    # stage 5: a multiplicative step W = Wc x eta / U + W_AI (here capped at W_init too),
    # and the stage restarts at 0
    assert out[5]["stage"] == 0


def test_most_loaded_hop_sets_u_and_tau_is_capped_at_t():
    out = _engine.hpcc_sender([
        (0, 10, [hop(0, 0, 0), hop(0, 0, 0)]),
        # 30 us since the last sample (> T): tau = T, U is this sample's u alone
        (10, 20, [hop(30, 93_750, 0), hop(30, 375_000, 125_000)]),
    ], **P)
    # hop 1: 93750 B / 30 us = 25 Gb/s: u = 0.25; hop 2: 100 Gb/s and min(qlen) 0: u = 1.0
    assert out[1]["u"] == pytest.approx(1.0)
    assert out[1]["w"] == round(125_000 * 0.95) + 100


def test_the_window_floor_holds():
    # a queue of 8000 BDPs: W = 125000 x 0.95 / 8001 + 10 = 24 B, below the 100 B floor
    out = _engine.hpcc_sender([(0, 10, [hop(0, 0, 0)]),
                               (10, 20, [hop(10, 125_000, 10**9)]), (20, 30, [hop(20, 250_000, 10**9)])],
                              **{**P, "w_ai": 10})
    assert out[-1]["u"] == pytest.approx(8001.0)
    assert out[-1]["w"] == P["w_floor"]


# ---------------------------------------------------------------------------------------
# In the engine.

def leafspine(flows=2, size="64KiB", **hpcc):
    return Scenario.from_dict({
        "topology": {"kind": "leaf-spine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2, "rate": "100G"},
        "hpcc": {"enabled": True, **hpcc},
        "flow": [{"src": i, "dst": 2 + i, "size": size, "transport": "roce", "verb": "write", "prio": 3}
                 for i in range(flows)]})


def run(sc, level="hop"):
    parts = []
    res = Simulation(sc, trace=level).run(trace_sink=parts.append)
    return res, (np.concatenate(parts) if parts else None)


def test_int_records_one_per_switch_and_echoed_in_acks():
    res, r = run(leafspine())
    s = res.summary
    assert s["flows_completed"] == 2 and s["conservation"]["residual"] == 0
    data = (r["kind"] == FK["roce"]) & (r["payload"] > 0) & (r["pkt"] >= 0)    # not the op rows
    sw = res.nodes["kind"][r["node"]] == 1
    tx = r["event"] == EV["tx_start"]
    # every data frame crosses leaf, spine, leaf: 3 records, 16 B each, on a 4 B header
    first = {}
    for pkt, size in zip(r["pkt"][data & tx & ~sw], r["size"][data & tx & ~sw]):
        first.setdefault(int(pkt), int(size))
    deliv = data & (r["event"] == EV["deliver"])
    grown = np.array([int(z) - first[int(p)] for p, z in zip(r["pkt"][deliv], r["size"][deliv])])
    assert len(grown) == sum(-(-65536 // 4096) for _ in range(2)) and (grown == 3 * 16).all()
    hops = np.bincount(r["pkt"][data & tx & sw])
    assert set(hops[hops > 0].tolist()) == {3}
    assert s["hpcc"]["int_records"] == 3 * deliv.sum()
    assert (r["flags"][data] & PF_INT).all()
    # ACKs echo all three records (and gain none on the way back)
    acks = r["kind"] == FK["roce_ack"]
    assert acks.any() and (r["flags"][acks] & PF_INT).all()
    assert (r["size"][acks] == ACK_BYTES + 4 + 3 * 16).all()
    # one ACK per data packet (HPCC needs per-packet feedback)
    assert (acks & (r["event"] == EV["deliver"])).sum() == deliv.sum()
    # every ACK after the first of its QP updated the window
    assert s["hpcc"]["window_updates"] == deliv.sum() - 2


def test_hpcc_off_carries_no_int():
    sc = leafspine()
    res, r = run(Scenario.from_dict({**sc.source, "hpcc": {"enabled": False}}))
    assert res.summary["hpcc"] is None
    assert not (r["flags"] & PF_INT).any()
    assert (r["size"][r["kind"] == FK["roce_ack"]] == ACK_BYTES).all()


@pytest.mark.parametrize("data, needle", [
    ({"dcqcn": {"enabled": True}, "hpcc": {"enabled": True}}, "hpcc.enabled and dcqcn.enabled"),
    ({"hpcc": {}, "roce": {"ack_every": 4}}, "roce.ack_every"),
    ({"hpcc": {"eta": 1.5}}, "hpcc.eta"),
    ({"hpcc": {"max_stage": -1}}, "hpcc.max_stage"),
    ({"hpcc": {"base_rtt": "0us"}}, "hpcc.base_rtt"),
    ({"hpcc": {"w_ai": 0}}, "hpcc.w_ai"),
    ({"hpcc": {"etaa": 0.9}}, "did you mean 'eta'"),
])
def test_bad_hpcc_sections_are_refused(data, needle):
    base = {"flow": [{"src": 0, "dst": 1, "size": 4096, "transport": "roce", "verb": "write"}]}
    with pytest.raises(ScenarioError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        Scenario.from_dict({**base, **data})


def test_base_rtt_from_the_path_and_window_defaults():
    sc = leafspine()
    sim = Simulation(sc)
    h = sim.hpcc
    # 4 links of 100 Gb/s, 1 us fibre each... the defaults: read the fabric's own numbers
    assert h["base_rtt_ps"] > 0
    assert h["w_init_bytes"] == 100 * 10**9 * h["base_rtt_ps"] // (8 * 10**12)
    assert h["w_ai_bytes"] == round(h["w_init_bytes"] * 0.05 / 100)
    given_t = Simulation(leafspine(base_rtt="20us")).hpcc
    assert given_t["base_rtt_ps"] == 20 * US and given_t["w_init_bytes"] == 250_000


# ---------------------------------------------------------------------------------------
# The built-in.

@pytest.fixture(scope="module")
def incast():
    sc = scenarios.load("incast-hpcc")
    return sc, *run(sc)


def test_incast_hpcc_completes_near_line_rate_without_pause_or_drop(incast):
    sc, res, r = incast
    s = res.summary
    assert s["flows_completed"] == 64 and s["stop"] == "empty"
    assert s["pfc_pause_frames"] == 0 and s["packets_dropped"] == 0 and s["timeouts"] == 0
    assert s["conservation"]["residual"] == 0
    # every byte of every data frame (INT records included) through the receiver's link
    # at 400 Gb/s, plus one base RTT: the last completion is within 6 % of that
    rx = (r["event"] == EV["deliver"]) & (r["kind"] == FK["roce"])
    wire_ps = int((r["size"][rx] + 20).sum()) * 8 * 10**12 // (400 * 10**9)
    ideal = wire_ps + res.summary["hpcc"]["base_rtt_ps"]
    last = int(res.flows["complete_ps"].max())
    assert ideal < last < 1.06 * ideal, (last, ideal)


def test_incast_hpcc_standing_queue_is_a_fraction_of_bdp(incast):
    sc, res, r = incast
    sw = res.nodes["kind"][r["node"]] == 1
    to_rx = (r["event"] == EV["tx_start"]) & sw & (r["dst"] == 0) & (r["kind"] == FK["roce"])
    q = r["qbytes"][to_rx]
    bdp = res.summary["hpcc"]["w_init_bytes"]
    # the first RTT sends W_init from every sender (HPCC starts at line rate); after that
    # the queue the receiver's port holds stays below a BDP
    assert q.max() > 32 * bdp
    later = r["time_ps"][to_rx] > 20 * res.summary["hpcc"]["base_rtt_ps"] + (int(q.max()) * 8 * 10**12 // (400 * 10**9))
    assert np.percentile(q[later], 99) < 0.5 * bdp
    assert np.median(q) < 0.1 * bdp


def test_incast_dcqcn_holds_a_far_larger_queue(incast):
    sc, res, r = incast
    dc, rd = run(scenarios.load("incast-dcqcn", ["topology.delay=1us", "run.until=1ms"]))
    med = {}
    for name, rr, rs in (("hpcc", r, res), ("dcqcn", rd, dc)):
        sw = rs.nodes["kind"][rr["node"]] == 1
        m = (rr["event"] == EV["tx_start"]) & sw & (rr["dst"] == 0) & (rr["kind"] == FK["roce"])
        med[name] = np.median(rr["qbytes"][m])
    assert med["dcqcn"] > 50 * med["hpcc"], med


def test_same_seed_same_trace(incast):
    sc, res, r = incast
    _, r2 = run(sc)
    assert hashlib.sha256(r.tobytes()).digest() == hashlib.sha256(r2.tobytes()).digest()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 24), rate=st.sampled_from(["100G", "200G", "400G"]),
       size=st.sampled_from(["16KiB", "64KiB", "200KiB"]), eta=st.sampled_from([0.9, 0.95, 0.98]))
def test_random_incasts(n, rate, size, eta):
    sc = Scenario.from_dict({
        "topology": {"kind": "star", "hosts": n + 1, "rate": rate},
        "hpcc": {"eta": eta},
        "workload": [{"kind": "incast", "receiver": "h0", "senders": n, "size": size, "prio": 3,
                      "transport": "roce", "verb": "write"}]})
    res, _ = run(sc, level="off")
    s = res.summary
    assert s["flows_completed"] == n and s["conservation"]["residual"] == 0
    assert s["packets_dropped"] == 0 and s["timeouts"] == 0
    h = s["hpcc"]
    assert s["hpcc"]["int_records"] == s["packets_delivered"]      # one switch per data frame
    q = res.qps
    upd = q["hp_updates"] > 0
    assert (q["hp_w_min"][upd] >= h["w_floor_bytes"]).all() and (q["hp_w"][upd] <= h["w_init_bytes"]).all()
    rates = res.rate_samples[:, 2]
    assert (rates <= int(sc.topology.rate_bps)).all() and (rates > 0).all()


# ---------------------------------------------------------------------------------------
# The INT header on the wire (ethlink/frames/fields.py HPCC_INT, HPCC_INT_HOP).

def test_int_golden_vector():
    """A WRITE MIDDLE with 8 B of payload and one INT record: the exact bytes, the INT
    header assembled by hand after the BTH, DSCP 26 + the INT bit, and the decode."""
    import struct
    from ethlink import frames as fr
    from ethlink.frames import fields as F
    row = {"frame_kind": "roce", "opcode": 0x07, "psn": 5, "dqpn": 0x101, "payload_len": 8, "pcp": 3,
           "ecn": 2, "ip_src": fr.ip_of_host(1), "ip_dst": fr.ip_of_host(0),
           "int_hops": [{"rate_mbps": 400_000, "ts_ns": 123_456, "tx_bytes": 0x01020304, "qlen": 4198}]}
    raw = fr.build_frame(row)
    assert raw.hex() == (
        "000000000000000000000000810060000800456e004800004000401126350a0000020a000001c00012b7003450cc"
        "0700ffff00000101000000051004010000061a800001e240010203040000106605060708090a0b0c3cfc40a1")
    assert len(raw) + 4 == F.roce_frame_bytes(0x07, 8, 0, 1) == 66 + 4 + 16 + 8
    assert raw[19] >> 2 == 26 | F.INT_DSCP_BIT                       # IPv4 TOS: DSCP 27, ECT(0)
    bth_end = 14 + 4 + 20 + 8 + 12
    assert raw[bth_end:bth_end + 20] == struct.pack(">BBBBIIII", 0x10, 4, 1, 0, 400_000, 123_456, 0x01020304, 4198)
    p = fr.decode(raw)
    hdr = p[fr.HpccInt]
    assert (hdr.version, hdr.hop_words, hdr.nhop) == (1, 4, 1)
    assert [(h.rate_mbps, h.ts_ns, h.tx_bytes, h.qlen) for h in hdr.hops] == [(400_000, 123_456, 0x01020304, 4198)]
    assert bytes(hdr.payload) == bytes(range(5, 13))                 # the payload follows the records
    # an ACK: AETH, then the echoed records; without INT nothing changes
    ack = fr.decode(fr.build_frame({**row, "opcode": 0x11, "payload_len": 0, "aeth_syndrome": 0x1F}))
    assert ack.haslayer(fr.AETH) and ack[fr.HpccInt].nhop == 1
    plain = fr.decode(fr.build_frame({k: v for k, v in row.items() if k != "int_hops"}))
    assert not plain.haslayer(fr.HpccInt) and plain[IP_].tos >> 2 == 26


from scapy.layers.inet import IP as IP_  # noqa: E402


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    sc = leafspine(flows=2, size="32KiB")
    path = tmp_path_factory.mktemp("hpcc") / "trace.arrow"
    return path, *run_traced(sc, path)


def test_frames_rebuilt_from_the_trace_carry_the_engine_records(traced):
    from ethlink import frames as fr
    from ethlink import tracepcap as TP
    _, table, info, res = traced
    hp = TP.int_records(info, table)
    sel, _ = TP.select(table, events=["deliver"])
    checked = 0
    for r in TP.rows(sel):
        if r["kind"] not in ("roce", "roce_ack") or r["pkt"] < 0:
            continue
        pkt = fr.decode(fr.build_frame(TP.frame_row(r, info, hpcc=hp)))     # checks the length
        hops = pkt[fr.HpccInt].hops
        assert len(hops) == 3
        # leaf, spine, leaf: 100 Gb/s links, egress times increasing along the path
        assert [h.rate_mbps for h in hops] == [100_000] * 3
        assert hops[0].ts_ns <= hops[1].ts_ns <= hops[2].ts_ns <= r["time_ps"] // 1000
        checked += 1
    assert checked >= 2 * 8 * 2
    # the last record each switch port stamped holds all the bytes that port sent
    tx, _ = TP.select(table, events=["tx_start"])
    last = {}
    for r in TP.rows(tx):
        if r["kind"] == "roce" and r["flags"] & PF_INT and info.node_kinds[r["node"]] == "switch":
            last[r["port"]] = TP.IntRecords.count(r), r
    for port, (n, r) in last.items():
        rec = hp.hops(r)[n - 1]
        assert rec["tx_bytes"] == int(res.ports["tx_bytes"][port]) & 0xFFFFFFFF
        assert rec["qlen"] == r["qbytes"] and rec["ts_ns"] == r["time_ps"] // 1000


@pytest.mark.skipif(__import__("shutil").which("tshark") is None, reason="tshark not installed")
def test_tshark_dissects_the_roce_of_hpcc_frames(traced, tmp_path):
    import subprocess
    from click.testing import CliRunner
    from ethlink.cli import main
    path, table, info, _ = traced
    for node, idx in (("leaf1", 2), ("leaf1", 0)):      # towards the receivers (data), and back (ACKs)
        out = tmp_path / f"{node}-{idx}.pcap"
        res = CliRunner().invoke(main, ["pcap", str(path), "-o", str(out), "--node", node, "--port-index", str(idx)])
        assert res.exit_code == 0, res.output
        p = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.protocols", "-e", "ip.dsfield.dscp",
                            "-e", "infiniband.bth.opcode", "-e", "_ws.malformed"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        lines = [ln.split("\t") for ln in p.stdout.splitlines()]
        assert lines and all(m == "" for *_, m in lines)                 # nothing malformed
        # the RoCE headers dissect; the INT header and records show as the start of the data
        assert all(pr.startswith("eth:ethertype:vlan:ethertype:ip:udp:infiniband") and ds == "27" and op
                   for pr, ds, op, _ in lines), lines[:3]


def test_replay_and_sweep_run_hpcc(traced, tmp_path):
    import json
    from click.testing import CliRunner
    from ethlink import sweep as SW
    from ethlink.cli import main
    path, table, info, res = traced
    # the traced run's operations replayed on the incast-hpcc fabric: the same two WRITEs
    out = tmp_path / "replay"
    r = CliRunner().invoke(main, ["replay", str(path), "--fabric", "incast-hpcc", "-o", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["flows_completed"] == 2 and s["hpcc"]["int_records"] == s["packets_delivered"]
    # a grid over eta: both points run HPCC with their own target
    t = SW.sweep("incast-hpcc", tmp_path / "sweep", {"hpcc.eta": [0.8, 0.95]}, jobs=1,
                 sets=["topology.hosts=5", "workload.0.senders=4", "workload.0.size=256KiB"],
                 metrics=["hpcc.w_ai_bytes", "flows_completed", "hpcc.window_final_bytes.p50"])
    rows = t.to_pylist()
    assert [r["hpcc.eta"] for r in rows] == [0.8, 0.95] and all(r["flows_completed"] == 4 for r in rows)
    assert abs(rows[0]["hpcc.w_ai_bytes"] - 4 * rows[1]["hpcc.w_ai_bytes"]) <= 4     # W_init (1 - eta) / 100, rounded


def test_the_window_bounds_bytes_in_flight():
    """T given as 100 ns: W_init = 400 Gb/s x 100 ns = 5000 B, so a QP may start a frame
    only while less than 5000 B are unacknowledged: at most two 4 KiB frames in flight."""
    sc = Scenario.from_dict({
        "topology": {"kind": "star", "hosts": 2, "rate": "400G", "delay": "1us"},
        "host": {"mtu": 4096}, "hpcc": {"base_rtt": "100ns"},
        "flow": [{"src": 0, "dst": 1, "size": "256KiB", "transport": "roce", "verb": "write"}]})
    res, r = run(sc, level="endpoints")
    assert res.summary["hpcc"]["w_init_bytes"] == 5000
    host0 = res.nodes["host"][r["node"]] == 0
    sent = host0 & (r["event"] == EV["tx_start"]) & (r["kind"] == FK["roce"]) & (r["pkt"] >= 0)
    acked = host0 & (r["event"] == EV["deliver"]) & (r["kind"] == FK["roce_ack"])
    in_flight = np.cumsum(sent.astype(int) - acked.astype(int))[sent]
    assert in_flight.max() == 2
    # window-bound: one 2-frame window per round trip (> 4 us of fibre), far from line rate
    assert res.flows["complete_ps"][0] > 64 / 2 * 4 * US


def test_base_rtt_comes_from_roce_paths_only():
    """HPCC paces RoCE data only: T is the longest RoCE message's round trip, so a UET
    message on a longer path (across the spine) must not lengthen it."""
    base = {"topology": {"kind": "leaf-spine", "leaves": 2, "hosts_per_leaf": 2, "rate": "100G",
                         "delay": "100ns", "fabric_delay": "1us"},
            "hpcc": {"enabled": True}}
    roce = {"src": "h0", "dst": "h1", "size": "64KiB", "transport": "roce", "verb": "write"}   # same leaf
    uet = {"src": "h0", "dst": "h3", "size": "64KiB", "transport": "uet"}     # across the spine
    alone = Simulation(Scenario.from_dict({**base, "flow": [roce]})).compiled.hpcc_base_rtt_ps
    mixed = Simulation(Scenario.from_dict({**base, "flow": [roce, uet]})).compiled.hpcc_base_rtt_ps
    across = Simulation(Scenario.from_dict({**base, "flow": [{**uet, "transport": "roce", "verb": "write"}]})
                        ).compiled.hpcc_base_rtt_ps
    assert mixed == alone < across
