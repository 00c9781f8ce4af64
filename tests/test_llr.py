"""Bit errors and link-level retry (csrc/llr.pxd), checked link by link from the trace.

A port with LLR numbers the data frames it sends for the first time: 0, 1, 2, ... in the
order of their first tx_start rows (control frames, PFC and credit updates, are not
numbered). A replay is a tx_start row followed by an llr_replay row of the same packet.
The receiver accepts a frame when it passes it on: an `rx` row at a switch, a `deliver`
row at a host. From these rows alone: every link accepts its frames exactly once and in
sequence order, every frame transmitted but not accepted is sent again, and without
LLR corrupted frames are dropped (reason fcs) at the rate the bit error rate gives.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import ethlink
from ethlink import scenarios
from ethlink import trace as T
from ethlink.sim import Simulation

CONTROL = (T.FRAME_KINDS.index("pfc"), T.FRAME_KINDS.index("cbfc"))
TX, REPLAY = T.EVENT_NAMES.index("tx_start"), T.EVENT_NAMES.index("llr_replay")
RX, DELIVER, DROP = T.EVENT_NAMES.index("rx"), T.EVENT_NAMES.index("deliver"), T.EVENT_NAMES.index("drop")


def traced(sc: ethlink.Scenario):
    sim = Simulation(sc, trace="hop")
    recs = []
    res = sim.run(trace_sink=recs.append)
    return sim, res, np.concatenate(recs)


def small_llr(*sets: str) -> ethlink.Scenario:
    """llr-ber on 4 GPUs: RoCE permutation of 256 KiB and closed-loop Load/Store, BER 1e-5."""
    return scenarios.load("llr-ber", ["topology.hosts=4", 'workload.0.size="256KiB"', "loadstore.0.ops=300",
                                      "link.ber=1e-5", *sets])


def link_history(sim, rec, port: int):
    """For the link from `port`: the transmitted LLR sequence numbers in order (first
    transmissions and replays), which were replays, and the accepted sequence numbers
    in acceptance order."""
    data = ~np.isin(rec["kind"], CONTROL)
    mine = rec[(rec["port"] == port) & data & ((rec["event"] == TX) | (rec["event"] == REPLAY))]
    replay = np.zeros(len(mine), dtype=bool)
    idx = np.nonzero(mine["event"] == REPLAY)[0]
    assert (mine["event"][idx - 1] == TX).all() and (mine["pkt"][idx - 1] == mine["pkt"][idx]).all()
    assert (mine["time_ps"][idx - 1] == mine["time_ps"][idx]).all()
    replay[idx - 1] = True
    keep = mine["event"] == TX
    pkts, is_replay, times = mine["pkt"][keep], replay[keep], mine["time_ps"][keep]
    seq: dict[int, int] = {}
    for p, r in zip(pkts.tolist(), is_replay.tolist()):
        if not r:
            assert p not in seq, "a first transmission twice"
            seq[p] = len(seq)
    sent = np.asarray([seq[p] for p in pkts.tolist()], dtype=np.int64)
    peer = int(sim.compiled.port_table.peer[port])
    peer_node = int(sim.compiled.port_table.node[peer])
    host = sim.compiled.nodes["kind"][peer_node] == 0
    acc = rec[(rec["port"] == peer) & (rec["node"] == peer_node) & (rec["event"] == (DELIVER if host else RX)) & data]
    accepted = np.asarray([seq[p] for p in acc["pkt"].tolist()], dtype=np.int64)
    return sent, is_replay[: len(sent)], times, accepted, acc["time_ps"], pkts


def llr_ports(sim, rec):
    data = ~np.isin(rec["kind"], CONTROL)
    return sorted(set(rec["port"][(rec["event"] == TX) & data].tolist()))


@pytest.fixture(scope="module")
def llr_run():
    sc = small_llr()
    sim, res, rec = traced(sc)
    return sim, res, rec


def test_the_small_run_has_errors_and_replays(llr_run):
    _, res, _ = llr_run
    s = res.summary
    assert s["fcs_errors"] > 10 and s["llr_replays"] >= s["fcs_errors"] and s["fcs_drops"] == 0
    assert s["flows_completed"] == s["flows_total"] and s["ls"]["count"] == s["ls"]["total"]
    assert s["packets_dropped"] == 0


def test_every_link_accepts_its_frames_once_and_in_sequence(llr_run):
    sim, res, rec = llr_run
    ports = llr_ports(sim, rec)
    assert len(ports) == 2 * sim.scenario.topology.hosts
    for p in ports:
        sent, _, _, accepted, _, _ = link_history(sim, rec, p)
        n = int(sent.max()) + 1
        assert accepted.tolist() == list(range(n)), f"port {p}"


def test_every_frame_not_accepted_is_transmitted_again(llr_run):
    """Each transmission that did not get its frame accepted is followed by a replay of
    that frame; the last transmission of each frame is the one accepted; the replays
    counted by the engine are these."""
    sim, res, rec = llr_run
    total = 0
    peer = sim.compiled.port_table.peer
    for p in llr_ports(sim, rec):
        sent, replay, times, accepted, acc_t, _ = link_history(sim, rec, p)
        accept_time = dict(zip(accepted.tolist(), acc_t.tolist()))
        last_tx: dict[int, int] = {}
        for s, t in zip(sent.tolist(), times.tolist()):
            last_tx[s] = t
        assert all(accept_time[s] > last_tx[s] for s in last_tx)
        counts = np.bincount(sent)
        assert (counts - 1 == np.bincount(sent[replay], minlength=len(counts))).all()
        assert int(replay.sum()) == int(res.ports["llr_replays"][p])
        assert res.ports["fcs_errors"][peer[p]] <= replay.sum()
        total += int(replay.sum())
    assert total == res.summary["llr_replays"] > 0


def test_replays_go_back_n_in_sequence_before_new_frames(llr_run):
    """Go-back-N: after a replay of frame k the link sends k+1, k+2, ... (replays) up to
    the newest frame sent before any new one: the transmitted sequence numbers never
    skip forward (x[i+1] <= x[i] + 1)."""
    sim, _, rec = llr_run
    skips = 0
    for p in llr_ports(sim, rec):
        sent, *_ = link_history(sim, rec, p)
        skips += int((np.diff(sent) > 1).sum())
    assert skips == 0


# --- without LLR --------------------------------------------------------------------------------

def _raw_link(ber: float, llr: bool, frames: int, payload: int):
    return ethlink.Scenario.from_dict({
        "name": "ber", "seed": 11,
        "topology": {"kind": "star", "hosts": 2, "rate": "400G", "delay": "10ns"},
        "host": {"mtu": payload},
        "link": {"ber": ber, "llr": llr},
        "flow": [{"src": "h0", "dst": "h1", "size": frames * payload}],
    })


def test_bit_errors_corrupt_frames_at_the_configured_rate():
    """Without LLR a corrupted frame is dropped by the receiver's FCS check: on each of
    the two links the drops are Binomial(frames crossing it, 1 - (1 - BER)^bits)."""
    ber, n, payload = 1e-5, 2000, 4096
    sc = _raw_link(ber, False, n, payload)
    sim, res, rec = traced(sc)
    size = payload + 22
    p = -math.expm1(8 * size * math.log1p(-ber))
    drops = rec[(rec["event"] == DROP)]
    assert (drops["reason"] == T.DROP_REASONS.index("fcs")).all() and (drops["size"] == size).all()
    pt = sim.compiled.port_table
    crossing = n
    for node_name in ("sw0", "h1"):
        node = sim.compiled.fabric.names.index(node_name)
        k = int((drops["node"] == node).sum())
        rx_port = int(np.nonzero(pt.node == node)[0][0] if node_name == "h1" else
                      np.nonzero((pt.node == node) & (pt.node[pt.peer] == sim.compiled.fabric.names.index("h0")))[0][0])
        assert res.ports["fcs_errors"][rx_port] == k
        mean, sd = crossing * p, math.sqrt(crossing * p * (1 - p))
        assert abs(k - mean) <= 4 * sd, (node_name, k, mean, sd)
        crossing -= k
    s = res.summary
    assert s["fcs_drops"] == s["fcs_errors"] == s["drops"]["fcs"] == n - crossing > 0
    assert s["bytes_delivered"] == crossing * payload


def test_llr_on_one_link_delivers_in_order_and_drops_nothing():
    """The same raw flow with LLR: nothing dropped, nothing delivered twice or out of order."""
    n, payload = 2000, 4096
    sim, res, rec = traced(_raw_link(1e-5, True, n, payload))
    s = res.summary
    assert s["packets_dropped"] == 0 and s["llr_replays"] >= s["fcs_errors"] > 0
    dl = rec[rec["event"] == DELIVER]["psn"]
    assert dl.tolist() == list(range(len(dl))) and len(dl) > 0.99 * n


def test_llr_leaves_no_frame_behind(llr_run):
    n, payload = 2000, 4096
    _, res, _ = traced(_raw_link(1e-5, True, n, payload))
    s = res.summary
    raw_ok = s["bytes_delivered"] == n * payload and s["packets_in_flight"] == 0
    ls = llr_run[1].summary
    assert raw_ok and ls["ls"]["retries"] == 0 and ls["retransmitted_packets"] == 0


def test_no_bit_errors_no_replays():
    sim, res, rec = traced(small_llr("link.ber=0"))
    s = res.summary
    assert s["llr_replays"] == s["fcs_errors"] == s["fcs_drops"] == 0
    assert not (rec["event"] == REPLAY).any()


def test_llr_off_losses_are_fcs_drops_repaired_end_to_end():
    sim, res, rec = traced(small_llr("link.llr=false", "link.ber=2e-6"))
    s = res.summary
    assert s.get("qp_errors", 0) == 0
    drops = rec[rec["event"] == DROP]
    assert len(drops) == s["fcs_drops"] == s["drops"]["fcs"] > 0
    assert (drops["reason"] == T.DROP_REASONS.index("fcs")).all()
    assert s["llr_replays"] == 0 and not (rec["event"] == REPLAY).any()
    assert s["retransmitted_packets"] > 0 or s["ls"]["retries"] > 0
    assert s["flows_completed"] == s["flows_total"] and s["ls"]["count"] == s["ls"]["total"]
