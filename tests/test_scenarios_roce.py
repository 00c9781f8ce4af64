"""The built-in lossless-Ethernet and RoCEv2 scenarios show what issue 3 says they must:
incast with PFC at the analytic time and no drop; without PFC and DCQCN, loss and
recovery; with DCQCN, fewer pauses and a queue held near the ECN band; fair shares;
PFC congestion spreading to a victim, undone by DCQCN; a PFC deadlock, detected, and
broken by the watchdog. Expected values are derived from the scenario's own parameters
(frame sizes from the IBA header table, wire time per IEEE 802.3), never pasted from a run.
"""
from __future__ import annotations

import numpy as np
import pytest

from ethlink import scenarios
from ethlink import trace as T
from ethlink.sim import Simulation
from ethlink.topology import SWITCH

from conftest import PREAMBLE, WIRE_EXTRA, port_index, ser

EV = {n: i for i, n in enumerate(T.EVENT_NAMES)}
FK = {n: i for i, n in enumerate(T.FRAME_KINDS)}
KiB, MiB = 1024, 1024 * 1024
ROCE_BASE, RETH = 66, 16     # Ether 14 + 802.1Q 4 + IPv4 20 + UDP 8 + BTH 12 + ICRC 4 + FCS 4; RETH


def run(name, overrides=(), until=None):
    return Simulation(scenarios.load(name, list(overrides))).run(until)


@pytest.fixture(scope="module")
def incast_pfc():
    return run("incast-pfc")


@pytest.fixture(scope="module")
def incast_lossy():
    return run("incast-lossy")


def queue_at_receiver(name, overrides=()):
    """(result, rows): enqueue and tx_start rows of the lossless queue of the switch port
    facing h0 (the bottleneck); qbytes is that queue's length after each event."""
    sim = Simulation(scenarios.load(name, list(overrides)), trace="hop")
    p = port_index(sim, "sw0", "h0")
    parts = []

    def keep(r):
        parts.append(r[(r["port"] == p) & (r["prio"] == 3) & np.isin(r["event"], [EV["enqueue"], EV["tx_start"]])])

    res = sim.run(trace_sink=keep)
    return res, np.concatenate(parts)


# ---------------------------------------------------------------------------------------
# incast-pfc

def analytic_incast_pfc_ps(sc) -> int:
    """64 x 1 MiB WRITEs into h0 at line rate: the bottleneck port sends every frame back
    to back (frame + preamble + IFG each), after the first frame's way to it, and the
    last frame then reaches h0."""
    wl = sc.workloads[0]
    rate, delay = sc.topology.rate_bps, sc.topology.delay_ps
    mtu = sc.host.mtu
    n = wl["size"] // mtu
    first, other = ROCE_BASE + RETH + mtu, ROCE_BASE + mtu          # WRITE_FIRST, WRITE_MIDDLE/LAST
    senders = len(wl["senders"])
    to_switch = ser(PREAMBLE + first, rate) + delay + sc.switch.latency_ps
    on_bottleneck = senders * (ser(first + WIRE_EXTRA, rate) + (n - 1) * ser(other + WIRE_EXTRA, rate))
    last = -ser(other + WIRE_EXTRA, rate) + ser(PREAMBLE + other, rate) + delay + sc.host.latency_ps
    return to_switch + on_bottleneck + last


def test_incast_pfc_lossless_at_analytic_time(incast_pfc):
    res = incast_pfc
    s = res.summary
    sc = res.scenario
    assert s["stop"] == "empty"
    assert s["packets_dropped"] == 0 and s["drops"] == {}
    assert s["flows_completed"] == 64 and s["bytes_delivered"] == 64 * MiB
    assert s["retransmitted_packets"] == 0 and s["naks"] == 0 and s["timeouts"] == 0
    assert s["pfc_pause_frames"] > 0 and s["pfc_pause_frames"] == s["pfc_pause_frames_received"]
    assert s["paused_time_ps"] > 0
    want = analytic_incast_pfc_ps(sc)
    last = int(res.flows["finish_ps"].max())
    assert last >= want, "faster than line rate"
    assert abs(last - want) <= 0.01 * want


# ---------------------------------------------------------------------------------------
# incast-lossy

def test_incast_lossy_drops_and_recovers_every_byte(incast_lossy, incast_pfc):
    s = incast_lossy.summary
    assert s["stop"] == "empty"
    assert s["pfc_pause_frames"] == 0 and s["cnps"] == 0
    assert s["drops"].get("queue_limit", 0) > 0
    assert s["naks"] > 0 and s["retransmitted_packets"] > 0 and s["timeouts"] >= 0
    assert s["flows_completed"] == 64
    assert s["bytes_delivered"] == 64 * MiB
    assert s["packets_sent"] == s["packets_delivered"] + s["packets_dropped"] + s["packets_discarded"]
    assert s["packets_in_flight"] == 0
    assert incast_lossy.flows["finish_ps"].max() > incast_pfc.flows["finish_ps"].max()


# ---------------------------------------------------------------------------------------
# incast-dcqcn

def test_incast_dcqcn_fewer_pauses_and_a_queue_near_the_ecn_band(incast_pfc):
    res, q = queue_at_receiver("incast-dcqcn")
    s = res.summary
    ecn = res.scenario.ecn
    assert s["flows_completed"] == 64 and s["packets_dropped"] == 0
    assert s["ecn_marked"] > 0 and s["cnps"] > 0
    assert s["pfc_pause_frames"] < incast_pfc.summary["pfc_pause_frames"]
    end = int(res.flows["finish_ps"].max())
    late = q["qbytes"][q["time_ps"] >= end // 2]
    assert np.median(late) <= 4 * ecn.kmax_bytes
    above = late > ecn.kmin_bytes
    up, down = np.sum(~above[:-1] & above[1:]), np.sum(above[:-1] & ~above[1:])
    assert up >= 3 and down >= 3, f"the queue should cross Kmin both ways repeatedly: {up} up, {down} down"
    # PFC alone keeps the queue an order of magnitude deeper over the same half
    res_pfc, q_pfc = queue_at_receiver("incast-pfc")
    end_pfc = int(res_pfc.flows["finish_ps"].max())
    assert np.median(q_pfc["qbytes"][q_pfc["time_ps"] >= end_pfc // 2]) > 10 * 10**6


# ---------------------------------------------------------------------------------------
# fairness-dcqcn

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fairness_dcqcn_jain_index_second_half(seed):
    """Per-flow bytes delivered to h0 over [T/2, T], T the first completion."""
    sim = Simulation(scenarios.load("fairness-dcqcn", [f"seed={seed}"]), trace="endpoints")
    h0 = sim.compiled.host_node[0]
    parts = []

    def keep(r):
        parts.append(r[(r["node"] == h0) & (r["event"] == EV["deliver"]) & (r["kind"] == FK["roce"])]
                     [["time_ps", "flow", "payload"]])

    res = sim.run(trace_sink=keep)
    d = np.concatenate(parts)
    n = len(res.flows)
    assert n == 4 and res.summary["flows_completed"] == 4 and res.summary["packets_dropped"] == 0
    end = int(res.flows["finish_ps"].min())
    w = d[(d["time_ps"] >= end // 2) & (d["time_ps"] <= end)]
    x = np.bincount(w["flow"], weights=w["payload"], minlength=n)
    jain = x.sum() ** 2 / (n * (x ** 2).sum())
    assert jain >= 0.95, f"seed {seed}: Jain index {jain:.3f}, shares {x / x.sum()}"
    assert res.summary["cnps"] > 0


# ---------------------------------------------------------------------------------------
# victim-pfc

def test_victim_slowed_by_pfc_spreading_and_not_with_dcqcn():
    sc = scenarios.load("victim-pfc")
    assert (sc.flows[0].src, sc.flows[0].dst) == (0, 15)         # the victim is flow 0
    pfc = Simulation(sc).run()
    dc = Simulation(sc.with_overrides("ecn.enabled=true", "dcqcn.enabled=true")).run()
    for r in (pfc, dc):
        assert r.summary["flows_completed"] == r.summary["flows_total"] == 7
        assert r.summary["packets_dropped"] == 0
    assert pfc.slowdown[0] >= 2
    assert dc.slowdown[0] < 1.5
    assert dc.summary["pfc_pause_frames"] < pfc.summary["pfc_pause_frames"]
    assert dc.summary["cnps"] > 0 and pfc.summary["cnps"] == 0


# ---------------------------------------------------------------------------------------
# deadlock-pfc

def test_deadlock_detected_and_run_ends_cleanly():
    """Traffic stops; the first periodic check after a whole silent period reports it and
    the run returns. The queues left paused and non-empty on switch-to-switch links form
    the cycle: every ring switch waits on the next one clockwise."""
    sc = scenarios.load("deadlock-pfc")
    sim = Simulation(sc, trace="hop")
    parts = []
    res = sim.run(trace_sink=lambda r: parts.append(r[(r["event"] == EV["tx_start"]) & (r["kind"] != FK["pfc"])]))
    s = res.summary
    assert s["stop"] == "deadlock"
    assert s["deadlock_detected"] is True
    assert s["flows_completed"] == 0
    assert s["watchdog_storms"] == 0
    assert s["pfc_pause_frames"] > 0
    assert s["packets_in_flight"] > 0
    t, period = s["deadlock_time_ps"], sc.pfc.deadlock_check_ps
    assert t > 0 and t % period == 0
    data_tx = np.concatenate(parts)["time_ps"]
    assert not np.any(data_tx > t - period), "a frame moved in the period before detection"
    assert np.any(data_tx > t - 2 * period), "detected one period late"
    c = sim.compiled
    pt, kinds, names = c.port_table, c.nodes["kind"], c.fabric.names
    q = res.queues.reshape(-1, 8)[:, 3]
    stuck = [p for p in range(len(pt.node))
             if kinds[pt.node[p]] == SWITCH and kinds[pt.node[pt.peer[p]]] == SWITCH
             and q["bytes"][p] > 0 and q["paused_until"][p] > t]
    waits = {names[pt.node[p]]: names[pt.node[pt.peer[p]]] for p in stuck}
    assert len(waits) == len(stuck) == sc.topology.switches
    node, seen = next(iter(waits)), []
    while node not in seen:
        seen.append(node)
        node = waits[node]
    assert len(seen) == sc.topology.switches, f"no cycle through every switch: {waits}"


def test_deadlock_broken_by_watchdog_ignoring_pauses():
    res = run("deadlock-pfc", ['pfc.watchdog.action="ignore"'])
    s = res.summary
    assert s["stop"] == "empty"
    assert s["deadlock_detected"] is False
    assert s["watchdog_storms"] > 0
    assert s["flows_completed"] == 8 and s["bytes_delivered"] == 8 * MiB


def test_deadlock_watchdog_drop_breaks_detection_but_not_the_cycle():
    """Action drop empties stormed queues, so no deadlock is reported and the watchdog
    keeps firing; go-back-N then re-sends bursts that rebuild the cyclic dependency, so
    flows do not finish in this pattern (and since retries never give up, the run needs a
    horizon)."""
    res = run("deadlock-pfc", ['pfc.watchdog.action="drop"'], until=5 * 10**9)
    s = res.summary
    assert s["stop"] == "until"
    assert s["deadlock_detected"] is False
    assert s["watchdog_storms"] > 0
    assert s["drops"].get("watchdog", 0) > 0
    assert s["timeouts"] > 0


# ---------------------------------------------------------------------------------------
# PFC x DCQCN

@pytest.mark.parametrize("pfc", [False, True])
@pytest.mark.parametrize("dcqcn", [False, True])
def test_pfc_and_dcqcn_each_on_or_off(pfc, dcqcn):
    """An 8:1 incast of 256 KiB WRITEs completes in all four combinations."""
    sc = scenarios.load("incast-dcqcn", [
        "workload.0.senders=8", 'workload.0.size="256KiB"', f"pfc.enabled={str(pfc).lower()}",
        f"ecn.enabled={str(dcqcn).lower()}", f"dcqcn.enabled={str(dcqcn).lower()}",
        'pfc.xoff="64KiB"', 'switch.threshold="static"', 'switch.queue_limit="256KiB"',
        'ecn.kmin="20KiB"', 'ecn.kmax="80KiB"'])
    res = Simulation(sc).run()
    s = res.summary
    assert s["stop"] == "empty"
    assert s["flows_completed"] == 8 and s["bytes_delivered"] == 8 * 256 * KiB
    assert s["packets_in_flight"] == 0
    if pfc:
        assert s["packets_dropped"] == 0 and s["pfc_pause_frames"] > 0
    else:
        assert s["pfc_pause_frames"] == 0
    if dcqcn:
        assert s["cnps"] > 0 and len(res.rate_samples) > 0
    else:
        assert s["cnps"] == 0 and len(res.rate_samples) == 0
