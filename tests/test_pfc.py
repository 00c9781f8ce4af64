"""PFC (IEEE 802.1Qbb) in the engine, checked from the hop-level trace.

What is asserted, and from what:

- pause timing, exactly: a host port of priority p starts no frame of p while a received
  pause is in force; the pause lasts quanta x 512 bit times at the link rate (ceil to the
  ps), a refresh restarts it, pause time 0 (XON) ends it at once. When a pause ends with a
  frame waiting, the next frame starts exactly at the resume time (or when the frame that
  was on the wire at the pause finishes). Both ends are exercised: XON (default quanta,
  refreshed long before expiry) and expiry (small quanta, refreshes held up behind data
  frames on the reverse link).
- a pause frame reaches the peer ser(8 + 64) + delay + response after its first bit
  leaves, and starts on its port as soon as the frame on the wire ends (ahead of queued
  data); every pause frame is 64 B; per link, frames sent == frames received; per
  port-priority the frames alternate XOFF (possibly refreshed) then XON, ending in XON,
  sent when the ingress bytes reach XOFF and fall to XOFF - xon_offset; the paused-time
  metric of each port-priority is the union of the pause intervals the frames imply.
- lossy priorities tail-drop in the same run in which lossless ones lose nothing;
  headroom drops appear only when the headroom is too small.

Timing helpers are written from the wire model (tests/conftest.py), not from ethlink.sim.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import ethlink
from ethlink import scenarios
from ethlink import trace as T
from ethlink.sim import Simulation
from ethlink.topology import HOST, SWITCH

from conftest import PREAMBLE, WIRE_EXTRA, ser

EV = {n: i for i, n in enumerate(T.EVENT_NAMES)}
FK = {n: i for i, n in enumerate(T.FRAME_KINDS)}
PFC_BYTES = 64           # 802.1Qbb MAC Control frame, padded to the Ethernet minimum
QUANTUM_BITS = 512       # one pause quantum (802.1Qbb clause 36.1.3.3)
LOSSLESS = 3


def traced(sc, level="hop"):
    """Run scenario `sc` (a Scenario or a dict) with a trace; (sim, result, records)."""
    if isinstance(sc, dict):
        sc = ethlink.Scenario.from_dict(sc)
    sim = Simulation(sc, trace=level)
    parts = []
    res = sim.run(trace_sink=parts.append)
    return sim, res, np.concatenate(parts)


def pause_ps(quanta: int, rate_bps: int) -> int:
    """quanta x 512 bit times, rounded up to the ps."""
    return -(-quanta * QUANTUM_BITS * 10**12 // rate_bps)


def timing_scenario(quanta: int, reverse: bool, response: str = "0ns") -> dict:
    """2:1 incast of RoCE WRITEs into h0 on a 100G star, lossless priority 3, static XOFF
    16 KiB (a few frames). With `reverse`, h0 also writes to h1, so the switch port that
    sends h1 its pause frames is busy with 4 KiB data frames."""
    flows = [{"src": "h1", "dst": "h0", "size": "512KiB", "prio": LOSSLESS, "transport": "roce"},
             {"src": "h2", "dst": "h0", "size": "512KiB", "prio": LOSSLESS, "transport": "roce"}]
    if reverse:
        flows.append({"src": "h0", "dst": "h1", "size": "512KiB", "prio": LOSSLESS, "transport": "roce"})
    return {
        "name": "pfc-timing",
        "topology": {"kind": "star", "hosts": 3, "rate": "100G", "delay": "100ns"},
        "switch": {"buffer": "4MiB", "latency": "300ns"},
        # headroom large: this test is about timing, not about what a late pause loses
        "pfc": {"priorities": [LOSSLESS], "xoff": "16KiB", "quanta": quanta, "headroom": "1MiB",
                "response": response},
        "flow": flows,
    }


def host_ports(sim) -> np.ndarray:
    c = sim.compiled
    return np.nonzero(c.nodes["kind"][c.ports["node"]] == HOST)[0]


def resumes(rows: np.ndarray, rate: int, prio: int) -> list[tuple[str, int, int, int]]:
    """Replay one host port's rows (pause_rx, enqueue, tx_start, in trace order) against
    the 802.1Qbb rules; returns (how, resume_ps, expected_start_ps, actual_start_ps) for
    every pause that ended with a frame of `prio` waiting. Asserts on the way that no
    frame of `prio` starts while paused."""
    out = []
    until = None            # the pause in force ends at this ps; None: not paused
    waiting: set[int] = set()
    busy_end = 0            # the wire is busy (frame + preamble + IFG) until this ps
    expect = None

    def expire(t):
        nonlocal until, expect
        if until is not None and until < t:
            if waiting and expect is None:
                expect = ("expiry", until, max(until, busy_end))
            until = None

    for r in rows:
        t, e = int(r["time_ps"]), int(r["event"])
        if e == EV["pause_rx"]:
            if int(r["prio"]) != prio:
                continue
            expire(t)
            if until is not None and until == t:
                until = None            # expiry and a new pause in the same ps: order not observable
                continue
            if int(r["psn"]) == 0:
                if until is not None and waiting and expect is None:
                    expect = ("xon", t, max(t, busy_end))
                until = None
            else:
                until = t + pause_ps(int(r["psn"]), rate)
        elif e == EV["enqueue"]:
            if int(r["prio"]) == prio:
                waiting.add(int(r["pkt"]))
        elif e == EV["tx_start"]:
            expire(t)
            if int(r["prio"]) == prio:
                assert until is None or t >= until, (
                    f"a frame of priority {prio} started at {t} ps while paused until {until} ps")
                waiting.discard(int(r["pkt"]))
                if expect is not None:
                    out.append(expect + (t,))
                    expect = None
            busy_end = t + ser(int(r["size"]) + WIRE_EXTRA, rate)
    return out


@pytest.fixture(scope="module")
def xon_run():
    return traced(timing_scenario(quanta=0xFFFF, reverse=False, response="50ns"))


@pytest.fixture(scope="module")
def expiry_run():
    return traced(timing_scenario(quanta=40, reverse=True))


@pytest.mark.parametrize("which, how", [("xon_run", "xon"), ("expiry_run", "expiry")])
def test_paused_port_resumes_exactly_at_xon_or_expiry(request, which, how):
    """No frame of the paused priority starts inside a pause; a waiting frame starts
    exactly when the pause ends (XON arrival, or quanta x 512 bit times after the last
    pause frame), or when the frame that was on the wire then finishes."""
    sim, res, tr = request.getfixturevalue(which)
    assert res.summary["flows_completed"] == res.summary["flows_total"]
    got = []
    for p in host_ports(sim):
        rows = tr[(tr["port"] == p) & np.isin(tr["event"], [EV["pause_rx"], EV["tx_start"], EV["enqueue"]])]
        got += resumes(rows, int(sim.compiled.ports["rate_bps"][p]), LOSSLESS)
    kinds = Counter(g[0] for g in got)
    assert kinds[how] >= 5, f"the scenario should end pauses by {how}: {kinds}"
    wrong = [g for g in got if g[2] != g[3]]
    assert not wrong, f"{len(wrong)} of {len(got)} resumes off (how, resume, expected, actual): {wrong[:5]}"


def test_pause_frame_flight_time_and_preemption(xon_run):
    """A pause frame leaves as soon as the frame on the wire ends (ahead of queued data)
    and takes effect ser(8 + 64) + delay + response later at the peer."""
    sim, res, tr = xon_run
    ports = sim.compiled.ports
    response = sim.scenario.pfc.response_ps
    assert response == 50_000
    checked = 0
    for p in np.unique(tr["port"][tr["event"] == EV["pause_tx"]]):
        rows = tr[(tr["port"] == p) & np.isin(tr["event"], [EV["pause_tx"], EV["tx_start"]])]
        rate, delay = int(ports["rate_bps"][p]), int(ports["delay_ps"][p])
        peer = int(ports["peer"][p])
        rx = tr[(tr["port"] == peer) & (tr["event"] == EV["pause_rx"])]
        rx_time = dict(zip(rx["pkt"].tolist(), rx["time_ps"].tolist()))
        busy_end, due = 0, {}
        for r in rows:
            t = int(r["time_ps"])
            if r["event"] == EV["pause_tx"]:
                due[int(r["pkt"])] = max(t, busy_end)
                continue
            if r["kind"] == FK["pfc"]:
                pkt = int(r["pkt"])
                assert t == due.pop(pkt), f"pause frame {pkt} on port {p} waited behind data"
                assert rx_time[pkt] == t + ser(PREAMBLE + PFC_BYTES, rate) + delay + response
                checked += 1
            busy_end = t + ser(int(r["size"]) + WIRE_EXTRA, rate)
        assert not due, f"pause frames never sent on port {p}: {due}"
    assert checked == res.summary["pfc_pause_frames"] > 0


@pytest.mark.parametrize("which", ["xon_run", "expiry_run"])
def test_pause_frames_64_bytes_sent_equals_received_xon_follows_xoff(request, which):
    sim, res, tr = request.getfixturevalue(which)
    ports = res.ports
    pfc = tr[tr["kind"] == FK["pfc"]]
    assert len(pfc) and set(pfc["size"].tolist()) == {PFC_BYTES}
    # per link: what one end sent, the other received; the summary counts the same
    assert np.array_equal(ports["pause_tx"], ports["pause_rx"][ports["peer"]])
    assert res.summary["pfc_pause_frames"] == res.summary["pfc_pause_frames_received"] == int(ports["pause_tx"].sum())
    tx = tr[tr["event"] == EV["pause_tx"]]
    assert len(tx) == res.summary["pfc_pause_frames"]
    # only switches send PFC (hosts drain at line rate), only for the lossless class
    assert set(sim.compiled.nodes["kind"][tx["node"]].tolist()) == {SWITCH}
    assert set(tx["prio"].tolist()) == {LOSSLESS}
    assert set(tx["opcode"].tolist()) == {1 << LOSSLESS}         # class-enable vector
    for (p, prio) in set(zip(tx["port"].tolist(), tx["prio"].tolist())):
        seq = tx["psn"][(tx["port"] == p) & (tx["prio"] == prio)]
        xon = seq == 0
        assert not xon[0], f"port {p}: XON before any XOFF"
        assert xon[-1], f"port {p}: the run ends with the upstream paused"
        assert not np.any(xon[1:] & xon[:-1]), f"port {p}: two XONs without an XOFF between"
        assert set(seq[~xon].tolist()) == {sim.scenario.pfc.quanta}
        # thresholds: XOFF when the port-priority's ingress bytes reach XOFF; XON once they
        # fall to XOFF - xon_offset (two maximum frames by default); refreshes in between
        xoff = sim.scenario.pfc.xoff_bytes
        xon_level = xoff - 2 * (sim.scenario.host.mtu + 64)
        level = tx["qbytes"][(tx["port"] == p) & (tx["prio"] == prio)]
        starts = ~xon & np.concatenate([[True], xon[:-1]])
        assert np.all(level[starts] >= xoff)
        assert np.all(level[~xon] > xon_level)
        assert np.all(level[xon] <= xon_level)


@pytest.mark.parametrize("which", ["xon_run", "expiry_run"])
def test_paused_time_per_port_priority_matches_the_pause_frames(request, which):
    """The paused_ps metric of every port-priority is the union of its pause intervals:
    from an XOFF to the XON, or to quanta x 512 bit times after the last XOFF (a refresh
    before then extends the pause)."""
    sim, res, tr = request.getfixturevalue(which)
    paused = res._paused_ps()
    ports = res.ports
    rx = tr[tr["event"] == EV["pause_rx"]]
    for p in range(len(ports)):
        rate = int(ports["rate_bps"][p])
        total, start, until = 0, None, None
        for r in rx[(rx["port"] == p) & (rx["prio"] == LOSSLESS)]:
            t = int(r["time_ps"])
            if until is not None and until < t:               # expired before this frame
                total, start, until = total + until - start, None, None
            if int(r["psn"]) == 0:
                total += t - start if start is not None else 0
                start, until = None, None
            else:
                start = t if start is None else start
                until = t + pause_ps(int(r["psn"]), rate)
        assert start is None or until < res.counters["sim_time_ps"]
        total += until - start if start is not None else 0
        assert paused[p, LOSSLESS] == total, f"port {p}"
        assert paused[p].sum() == paused[p, LOSSLESS]
    assert res.summary["paused_time_ps"] == int(paused.sum()) > 0
    by_port = {row["port"]: row for row in res.ports_table().to_pylist()}
    for p, row in by_port.items():
        assert row["paused_ps"] == paused[p].tolist()
        assert (row["pause_tx"], row["pause_rx"]) == (ports["pause_tx"][p], ports["pause_rx"][p])


def test_lossy_priority_drops_while_lossless_loses_nothing():
    """One run, one congested port: RoCE on lossless priority 3 and raw flows on lossy
    priority 0. The lossy queue tail-drops at its static limit; the lossless one pauses."""
    sc = {
        "name": "pfc-mixed",
        "topology": {"kind": "star", "hosts": 5, "rate": "100G"},
        "switch": {"buffer": "4MiB", "threshold": "static", "queue_limit": "64KiB"},
        "pfc": {"priorities": [LOSSLESS], "xoff": "32KiB"},
        "flow": [{"src": f"h{i}", "dst": "h0", "size": "1MiB", "prio": LOSSLESS, "transport": "roce"}
                 for i in (1, 2)] +
                [{"src": f"h{i}", "dst": "h0", "size": "1MiB", "prio": 0} for i in (3, 4)],
    }
    sim, res, tr = traced(sc)
    drops = tr[tr["event"] == EV["drop"]]
    assert len(drops) > 0
    assert set(drops["prio"].tolist()) == {0}
    assert set(drops["reason"].tolist()) == {T.DROP_REASONS.index("queue_limit")}
    assert res.summary["drops"] == {"queue_limit": len(drops)}
    assert res.summary["pfc_pause_frames"] > 0
    fl = res.flows
    lossless = fl["prio"] == LOSSLESS
    assert np.array_equal(fl["delivered"][lossless], fl["size"][lossless])
    assert res.summary["retransmitted_packets"] == 0
    assert np.all(fl["delivered"][~lossless] < fl["size"][~lossless])    # raw: what drops is lost
    q = res.queues.reshape(-1, 8)
    assert q["drops"][:, LOSSLESS].sum() == 0


def test_default_headroom_absorbs_incast_pfc():
    """The computed default headroom covers what arrives after XOFF: no headroom drop
    (and no drop at all) in the 64:1 incast."""
    res = Simulation(scenarios.load("incast-pfc")).run()
    assert "headroom" not in res.summary["drops"]
    assert res.summary["packets_dropped"] == 0
    assert res.summary["pfc_pause_frames"] > 0


def test_tiny_headroom_drops_lossless_frames_as_headroom():
    """1 KiB of headroom is less than one frame in flight: lossless frames arriving after
    XOFF (static, 64 KiB per ingress port) are dropped with reason headroom, and RoCE
    recovers every byte."""
    sc = scenarios.load("incast-pfc", ['pfc.headroom="1KiB"', 'pfc.xoff="64KiB"', "workload.0.senders=8",
                                       'workload.0.size="256KiB"'])
    res = Simulation(sc).run()
    s = res.summary
    assert s["drops"].get("headroom", 0) > 0
    assert set(s["drops"]) == {"headroom"}
    assert s["flows_completed"] == 8 and s["bytes_delivered"] == 8 * 256 * 1024
    assert s["retransmitted_packets"] > 0
    # the drops happen at the switch ingress of the lossless class only
    q = res.queues.reshape(-1, 8)
    assert q["drops"][:, LOSSLESS].sum() == s["packets_dropped"]
