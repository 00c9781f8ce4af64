"""RoCEv2 RC transport in the engine: segmentation, opcodes, frame sizes, ACK coalescing,
go-back-N, retransmission timeout, and every traced frame rebuilt as real bytes.

Expected values come from the specifications, not from ethlink.sim: frame sizes from the
IBA header table (Annex A17; PROTOCOLS.md), timing from the wire model of
tests/conftest.py (a frame occupies ser(size + 20); its last bit is ser(8 + size) + delay
after its first), with the receiving node's latency added on receive. A lone message
is therefore timed here independently of `ethlink.sim.ideal_fct_ps`, and slowdown 1.0 is
checked against both.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scapy.contrib.mac_control import MACControlClassBasedFlowControl

import ethlink
from ethlink import frames as fr
from ethlink import trace as T
from ethlink import tracepcap as TP
from ethlink.sim import Simulation

from conftest import PREAMBLE, WIRE_EXTRA, ser

EV = {n: i for i, n in enumerate(T.EVENT_NAMES)}
FK = {n: i for i, n in enumerate(T.FRAME_KINDS)}
KiB, MiB = 1024, 1024 * 1024
MTU = 4096

# BTH opcodes, RC (IBA table 41)
SEND_FIRST, SEND_MIDDLE, SEND_LAST, SEND_LAST_IMM, SEND_ONLY, SEND_ONLY_IMM = range(0x00, 0x06)
WRITE_FIRST, WRITE_MIDDLE, WRITE_LAST, WRITE_LAST_IMM, WRITE_ONLY, WRITE_ONLY_IMM = range(0x06, 0x0C)
READ_REQUEST, READ_RESP_FIRST, READ_RESP_MIDDLE, READ_RESP_LAST, READ_RESP_ONLY, ACK = range(0x0C, 0x12)
CNP = 0x81
SYN_ACK, SYN_NAK_SEQ = 0x1F, 0x60          # AETH: ACK with unlimited credits; NAK PSN sequence error

# Frame bytes: Ether 14 + 802.1Q 4 + IPv4 20 + UDP 8 + BTH 12 + ICRC 4 + FCS 4, plus the
# extension headers each opcode carries (RETH 16, ImmDt 4, AETH 4), plus the payload padded
# to 4 B (BTH PadCnt).
BASE = 14 + 4 + 20 + 8 + 12 + 4 + 4
RETH, IMM, AETH = 16, 4, 4
EXT = {SEND_FIRST: 0, SEND_MIDDLE: 0, SEND_LAST: 0, SEND_LAST_IMM: IMM, SEND_ONLY: 0, SEND_ONLY_IMM: IMM,
       WRITE_FIRST: RETH, WRITE_MIDDLE: 0, WRITE_LAST: 0, WRITE_LAST_IMM: IMM, WRITE_ONLY: RETH,
       WRITE_ONLY_IMM: RETH + IMM, READ_REQUEST: RETH, READ_RESP_FIRST: AETH, READ_RESP_MIDDLE: 0,
       READ_RESP_LAST: AETH, READ_RESP_ONLY: AETH, ACK: AETH}

# (first, middle, last, only) per verb
SEQ = {"write": (WRITE_FIRST, WRITE_MIDDLE, WRITE_LAST, WRITE_ONLY),
       "write_imm": (WRITE_FIRST, WRITE_MIDDLE, WRITE_LAST_IMM, WRITE_ONLY_IMM),
       "send": (SEND_FIRST, SEND_MIDDLE, SEND_LAST, SEND_ONLY),
       "send_imm": (SEND_FIRST, SEND_MIDDLE, SEND_LAST_IMM, SEND_ONLY_IMM),
       "read": (READ_RESP_FIRST, READ_RESP_MIDDLE, READ_RESP_LAST, READ_RESP_ONLY)}


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def frame_bytes(op: int, payload: int) -> int:
    return max(64, BASE + EXT[op] + payload + (-payload) % 4)


def opcodes(verb: str, n: int) -> list[int]:
    first, middle, last, only = SEQ[verb]
    return [only] if n == 1 else [first] + [middle] * (n - 2) + [last]


def payloads(size: int, mtu: int = MTU) -> list[int]:
    n = -(-size // mtu)
    return [mtu] * (n - 1) + [size - mtu * (n - 1)]


def arrival(frames: list[int], hops: list[tuple[int, int, int]], t0: int = 0) -> int:
    """When the last of `frames`, sent back to back from t0, is received at the end of
    `hops` (rate, delay, latency of the receiving node), store-and-forward."""
    avail = [t0] * len(frames)
    for rate, delay, lat in hops:
        free = 0
        for i, f in enumerate(frames):
            start = max(avail[i], free)
            free = start + ser(f + WIRE_EXTRA, rate)
            avail[i] = start + ser(f + PREAMBLE, rate) + delay + lat
    return avail[-1]


def traced(sc, level="hop", **kw):
    if isinstance(sc, dict):
        sc = ethlink.Scenario.from_dict(sc)
    sim = Simulation(sc, trace=level, **kw)
    parts = []
    res = sim.run(trace_sink=parts.append)
    return sim, res, np.concatenate(parts)


def host_port(sim, host: int) -> int:
    c = sim.compiled
    return int(c.nodes["first_port"][c.host_node[host]])


RATE, DELAY, SW_LAT, HOST_LAT = 400 * 10**9, 100_000, 300_000, 200_000
STAR2 = {"kind": "star", "hosts": 2, "rate": "400G", "delay": "100ns"}
PATH = [(RATE, DELAY, SW_LAT), (RATE, DELAY, HOST_LAT)]      # host -> switch -> host


# ---------------------------------------------------------------------------------------
# A lone message: exact time, packets, opcodes, sizes

@pytest.mark.parametrize("verb", ["write", "send", "read", "write_imm", "send_imm"])
@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 1 * MiB])
def test_lone_message_exact(verb, size):
    sc = {"name": "lone", "topology": STAR2, "switch": {"latency": "300ns"}, "host": {"latency": "200ns"},
          "flow": [{"src": "h0", "dst": "h1", "size": size, "transport": "roce", "verb": verb}]}
    sim, res, tr = traced(sc)
    fl = res.flows[0]
    n = -(-size // MTU)
    pay = payloads(size)
    ops = opcodes(verb, n)
    sizes = [frame_bytes(o, p) for o, p in zip(ops, pay)]
    tx = tr[tr["event"] == EV["tx_start"]]
    at_src, at_dst = tx[tx["port"] == host_port(sim, 0)], tx[tx["port"] == host_port(sim, 1)]
    if verb == "read":
        req = frame_bytes(READ_REQUEST, 0)
        assert req == 82
        assert at_src["opcode"].tolist() == [READ_REQUEST] and at_src["size"].tolist() == [req]
        data = at_dst                                   # responses stream back from h1
        assert not np.any(tx["kind"] == FK["roce_ack"]), "READ responses are the acknowledgement"
        want_fct = arrival(sizes, PATH, arrival([req], PATH))
    else:
        data = at_src[at_src["kind"] == FK["roce"]]
        acks = at_dst
        assert np.all(acks["kind"] == FK["roce_ack"]) and np.all(acks["opcode"] == ACK)
        assert acks["psn"].tolist() == list(range(n)) and set(acks["syndrome"].tolist()) == {SYN_ACK}
        assert set(acks["size"].tolist()) == {frame_bytes(ACK, 0)} == {70}
        want_fct = arrival(sizes, PATH)
    assert data["opcode"].tolist() == ops
    assert data["size"].tolist() == sizes
    assert data["payload"].tolist() == pay
    assert data["psn"].tolist() == list(range(n))
    assert data["addr"].tolist() == [MTU * k for k in range(n)]
    assert int(fl["npkts"]) == n
    assert res.summary["packets_sent"] == n + (verb == "read")
    assert res.summary["retransmitted_packets"] == 0 and res.summary["packets_discarded"] == 0
    assert res.fct_ps[0] == want_fct
    assert res.ideal_fct_ps[0] == want_fct
    assert res.slowdown[0] == 1.0
    # CQE: the requester's completion is when the last PSN is acknowledged
    if verb == "read":
        assert fl["complete_ps"] == fl["finish_ps"]
    else:
        back = [(RATE, DELAY, SW_LAT), (RATE, DELAY, HOST_LAT)]
        assert fl["complete_ps"] == arrival([frame_bytes(ACK, 0)], back, int(fl["finish_ps"]))
    assert fl["first_tx_ps"] == 0


# ---------------------------------------------------------------------------------------
# ACK coalescing

@pytest.mark.parametrize("every", [1, 3, 4, 16])
def test_ack_every_n_packets_and_at_each_message_end(every):
    """Five messages posted on one QP (5, 3, 1, 8 and 5 packets): the responder ACKs the
    (k x N)-th packet of each message and its last one, so ceil(n / N) ACKs per message,
    each carrying the PSN acknowledged and the count of messages completed (MSN)."""
    sizes = [5 * MTU, 3 * MTU, 1, 8 * MTU, 4 * MTU + 1]
    verbs = ["write", "send", "write", "write_imm", "send"]
    table = {"id": np.arange(5), "time_ps": np.zeros(5, dtype=np.int64), "src": np.zeros(5, dtype=np.int64),
             "dst": np.ones(5, dtype=np.int64), "op": verbs, "bytes": np.array(sizes), "prio": np.zeros(5, dtype=np.int64),
             "qp": np.zeros(5, dtype=np.int64)}
    sc = ethlink.Scenario.from_dict({"name": "ack-every", "topology": STAR2, "roce": {"ack_every": every},
                                     "flow": [{"src": "h0", "dst": "h1", "size": 1, "transport": "roce"}]})
    sim, res, tr = traced(sc, workload=table)
    assert len(np.unique(res.flows["qp"])) == 1
    want_psn, want_msn, psn, msn = [], [], 0, 0
    for size in sizes:
        n = -(-size // MTU)
        for j in range(n):
            if (j + 1) % every == 0 or j == n - 1:
                msn += j == n - 1
                want_psn.append(psn + j)
                want_msn.append(msn)
        psn += n
    acks = tr[(tr["event"] == EV["tx_start"]) & (tr["port"] == host_port(sim, 1))]
    assert np.all(acks["kind"] == FK["roce_ack"])
    assert len(acks) == sum(ceil_div(ceil_div(s, MTU), every) for s in sizes)
    assert acks["psn"].tolist() == want_psn
    assert acks["addr"].tolist() == want_msn           # AETH MSN
    assert res.summary["flows_completed"] == 5
    assert np.all(np.diff(res.flows["complete_ps"]) > 0)


# ---------------------------------------------------------------------------------------
# Real bytes for every traced frame

def frame_mix_scenario() -> dict:
    """Every frame kind the RoCE stack sends: a 3:1 incast that triggers PFC, ECN marks
    and CNPs, plus READs, _IMM verbs and odd sizes (padding), with ACKs coalesced by 3."""
    roce = {"prio": 3, "transport": "roce"}
    return {
        "name": "frame-mix",
        "topology": {"kind": "star", "hosts": 6, "rate": "100G"},
        "switch": {"buffer": "4MiB"},
        "pfc": {"priorities": [3], "xoff": "32KiB"},
        "ecn": {"priorities": [3], "kmin": "10KiB", "kmax": "40KiB", "pmax": 0.5},
        "dcqcn": {"enabled": True},
        "roce": {"ack_every": 3},
        "workload": [{"kind": "incast", "receiver": "h0", "senders": 3, "size": "300KiB", **roce}],
        "flow": [{"src": "h4", "dst": "h0", "size": 4095, "verb": "read", **roce},
                 {"src": "h5", "dst": "h0", "size": 9001, "verb": "write_imm", **roce},
                 {"src": "h5", "dst": "h4", "size": 8195, "verb": "send_imm", **roce},
                 {"src": "h4", "dst": "h5", "size": 10003, "verb": "send", **roce},
                 {"src": "h1", "dst": "h5", "size": 13, "verb": "read", **roce}],
    }


def test_every_traced_frame_rebuilds_as_real_bytes():
    """Each tx_start row at every hop (RoCE data and requests, ACKs, CNPs, PFC) becomes a
    frame through ethlink.tracepcap and ethlink.frames.build_frame, which raises if the
    engine's frame length differs from the real frame's; decoded back, the headers carry
    the traced fields."""
    sim, res, tr = traced(frame_mix_scenario())
    s = res.summary
    assert s["flows_completed"] == s["flows_total"]
    tx = tr[tr["event"] == EV["tx_start"]]
    kinds = set(T.FRAME_KINDS[k] for k in np.unique(tx["kind"]))
    assert kinds == {"roce", "roce_ack", "cnp", "pfc"}
    assert set(tx["ecn"][tx["kind"] == FK["roce"]].tolist()) == {2, 3}     # ECT(0), and CE
    info = T.TraceInfo.of(T.TRACE_SCHEMA.with_metadata({**T.simulation_metadata(sim), "complete": "true"}))
    table = pa.Table.from_batches([T.records_to_batch(tx)])
    built = 0
    for row, (_, raw) in zip(TP.rows(table), TP.frames(table, info)):
        assert len(raw) + 4 == row["size"]
        pkt = fr.decode(raw)
        if row["kind"] == "pfc":
            body = pkt[MACControlClassBasedFlowControl]
            assert getattr(body, f"c{row['prio']}_pause_time") == row["psn"]
            assert getattr(body, f"c{row['prio']}_enabled") == 1
        else:
            bth = pkt[fr.BTH]
            assert (bth.opcode, bth.psn, bth.dqpn) == (row["opcode"], row["psn"], fr.QPN_BASE + row["qp"])
            assert bth.dqpn > 1                  # never a management QP (Wireshark: MAD)
            if row["kind"] == "cnp":
                assert bth.opcode == CNP and bth.becn == 1 and row["size"] == BASE + 16
            elif row["kind"] == "roce_ack":
                assert pkt[fr.AETH].syndrome == row["syndrome"]
            else:
                assert row["size"] == frame_bytes(row["opcode"], row["payload"])
        built += 1
    assert built == len(tx) > 0


# ---------------------------------------------------------------------------------------
# Loss recovery

def lossy_incast(**roce) -> dict:
    """8:1 incast of 256 KiB WRITEs into a 64 KiB static queue, no PFC: tail drops."""
    return {"name": "gbn", "topology": {"kind": "star", "hosts": 9, "rate": "100G"},
            "switch": {"buffer": "4MiB", "threshold": "static", "queue_limit": "64KiB"},
            "roce": {"rto": "20us", **roce},
            "workload": [{"kind": "incast", "receiver": "h0", "size": "256KiB", "prio": 3, "transport": "roce"}]}


def test_go_back_n_resends_from_the_naked_psn_and_delivers_once():
    sim, res, tr = traced(lossy_incast())
    s, fl = res.summary, res.flows
    assert s["drops"].get("queue_limit", 0) > 0 and s["naks"] > 0 and s["retransmitted_packets"] > 0
    checked = 0
    for f in range(len(fl)):
        p = host_port(sim, int(fl["src"][f]))
        rows = tr[(tr["port"] == p) & (
            ((tr["event"] == EV["deliver"]) & (tr["kind"] == FK["roce_ack"]) & (tr["syndrome"] == SYN_NAK_SEQ))
            | ((tr["event"] == EV["tx_start"]) & (tr["kind"] == FK["roce"])))]
        naked = None
        for r in rows:
            if r["event"] == EV["deliver"]:
                naked = int(r["psn"])
                checked += 1
            elif naked is not None:
                assert int(r["psn"]) == naked, f"flow {f}: NAK for PSN {naked}, next data PSN {r['psn']}"
                naked = None
    assert checked == s["naks"]
    # every byte delivered once: each PSN accepted exactly once, nothing left over
    assert np.array_equal(fl["delivered"], fl["size"])
    assert s["bytes_delivered"] == int(fl["size"].sum())
    assert s["packets_delivered"] == int(fl["npkts"].sum())
    assert s["packets_sent"] == s["packets_delivered"] + s["packets_dropped"] + s["packets_discarded"]
    assert s["packets_in_flight"] == 0
    # the responder accepted PSNs in order: replay its rule over the delivered frames
    h0 = host_port(sim, 0)
    dl = tr[(tr["event"] == EV["deliver"]) & (tr["port"] == h0) & (tr["kind"] == FK["roce"])]
    for q in np.unique(dl["qp"]):
        epsn, accepted = 0, []
        for psn in dl["psn"][dl["qp"] == q].tolist():
            if psn == epsn:
                accepted.append(psn)
                epsn += 1
        assert accepted == list(range(256 * KiB // MTU))


@pytest.mark.parametrize("rto_max_us, gaps_us", [(10_000, [10, 20, 40]), (25, [10, 20, 25])])
def test_lost_last_packet_recovers_by_timeout_with_backoff(rto_max_us, gaps_us):
    """16 one-packet WRITEs reach a switch port at the same ps; its static queue takes 4
    (a fifth goes straight onto the wire). A lost packet is its message's last, so no
    later packet reveals the gap: no NAK, only the timeout. The losers retransmit
    together, and lose again: the unluckiest QP's retransmissions are 10, 20, 40 us apart
    (the timeout doubles, capped at rto_max)."""
    sc = {"name": "rto", "topology": {"kind": "star", "hosts": 17, "rate": "100G"},
          "switch": {"buffer": "4MiB", "threshold": "static", "queue_limit": 18432},
          "roce": {"rto": "10us", "rto_max": f"{rto_max_us}us"},
          "workload": [{"kind": "incast", "receiver": "h0", "size": MTU, "prio": 3, "transport": "roce"}]}
    sim, res, tr = traced(sc)
    s, fl = res.summary, res.flows
    assert s["flows_completed"] == 16 and s["naks"] == 0
    assert s["timeouts"] == s["retransmitted_packets"] == s["packets_dropped"] > 0
    worst = []
    for f in range(16):
        p = host_port(sim, int(fl["src"][f]))
        t = tr["time_ps"][(tr["port"] == p) & (tr["event"] == EV["tx_start"]) & (tr["kind"] == FK["roce"])]
        gaps = np.diff(t).tolist()
        assert gaps == [g * 10**6 for g in gaps_us[:len(gaps)]], f"flow {f}: gaps {gaps}"
        assert res.qps["timeouts"][fl["qp"][f]] == len(gaps)
        worst = max(worst, gaps, key=len)
    assert len(worst) == 3



def lossy_messages(verb: str) -> ethlink.Scenario:
    """lossy_incast with WRITEs replaced by `verb`; for READ, h0 reads 256 KiB from each
    of the eight hosts, so the responses converge on h0's port instead."""
    sc = lossy_incast()
    if verb == "read":
        del sc["workload"]
        sc["flow"] = [{"src": "h0", "dst": f"h{i}", "size": "256KiB", "prio": 3, "transport": "roce", "verb": "read"}
                      for i in range(1, 9)]
    else:
        sc["workload"][0]["verb"] = verb
    return ethlink.Scenario.from_dict(sc)


@pytest.mark.parametrize("verb", ["write", "send_imm", "read"])
def test_lossy_conservation_every_frame_sent_is_delivered_dropped_or_discarded(verb):
    """Every frame a QP sends (data, READ requests, READ responses) ends delivered,
    dropped or discarded by the transport receiver; none is left over."""
    res = Simulation(lossy_messages(verb)).run()
    s, fl = res.summary, res.flows
    assert s["flows_completed"] == 8 and np.array_equal(fl["delivered"], fl["size"])
    assert s["packets_dropped"] > 0 and s["packets_in_flight"] == 0
    assert s["packets_sent"] == s["packets_delivered"] + s["packets_dropped"] + s["packets_discarded"]


@pytest.mark.parametrize("verb", ["write", "send_imm", "read"])
def test_lossy_every_frame_beyond_the_first_transmission_counts_as_retransmitted(verb):
    """packets_sent = one transmission of each PSN (plus one READ request per READ) +
    retransmitted_packets: what go-back-N or a re-issued READ sends again is counted,
    whichever end of the QP sends it."""
    res = Simulation(lossy_messages(verb)).run()
    s, fl = res.summary, res.flows
    first = int(fl["npkts"].sum()) + int(np.sum(fl["verb"] == 3))        # Verb READ = 3
    assert s["flows_completed"] == 8 and s["packets_dropped"] > 0
    assert s["packets_sent"] == first + s["retransmitted_packets"]
    assert s["retransmitted_packets"] == int(fl["retx"].sum())


def test_timeout_backoff_resets_once_the_qp_makes_progress():
    """Backoff is for consecutive timeouts (Qp.retries: "consecutive timeouts without
    progress"). The 16-sender race of the test above, twice on the same QPs, 1 ms apart:
    each QP's first wave has completed (progress) before its second message is posted,
    so a second-wave loss waits the initial timeout again, not the backed-off one."""
    sc = ethlink.Scenario.from_dict({
        "name": "rto-reset", "topology": {"kind": "star", "hosts": 17, "rate": "100G"},
        "switch": {"buffer": "4MiB", "threshold": "static", "queue_limit": 18432},
        "roce": {"rto": "10us"}, "flow": [{"src": "h1", "dst": "h0", "size": 1, "transport": "roce"}]})
    n, wave2 = 32, 10**9
    table = {"id": np.arange(n), "time_ps": np.repeat([0, wave2], 16), "src": np.tile(np.arange(1, 17), 2),
             "dst": np.zeros(n, dtype=np.int64), "op": ["write"] * n, "bytes": np.full(n, MTU),
             "prio": np.full(n, 3), "qp": np.zeros(n, dtype=np.int64)}
    sim, res, tr = traced(sc, workload=table)
    fl = res.flows
    assert res.summary["flows_completed"] == n
    assert np.all(fl["complete_ps"][:16] < wave2)
    rto = sc.roce.rto_ps
    second_wave_gaps = []
    for h in range(1, 17):
        t = tr["time_ps"][(tr["port"] == host_port(sim, h)) & (tr["event"] == EV["tx_start"]) & (tr["kind"] == FK["roce"])]
        late = t[t >= wave2]
        assert late[0] == wave2
        if len(late) > 1:
            second_wave_gaps.append(int(late[1] - late[0]))
    assert second_wave_gaps, "some second-wave packet should be lost"
    assert set(second_wave_gaps) == {rto}, f"first retransmission after {sorted(set(second_wave_gaps))} ps"
