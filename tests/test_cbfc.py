"""Credit-based flow control (csrc/cbfc.pxd): credits reconstructed from the trace.

For each sending port and CBFC priority the trace shows what the sender did (tx_start
rows, frame sizes in cells of `cbfc.cell` bytes) and what it was told (the `credit` rows
at its port: the receiver's cumulative count of freed cells). From them alone: a sender
never holds more than its limit of cells in the receiver, credit updates are 64 B frames
sent once `update` bytes' worth of cells were freed, and cells are conserved.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import ethlink
from ethlink import frames as fr
from ethlink import scenarios
from ethlink import trace as T
from ethlink import tracepcap as TP
from ethlink.scenario import ScenarioError
from ethlink.sim import Simulation

CONTROL = (T.FRAME_KINDS.index("pfc"), T.FRAME_KINDS.index("cbfc"))


def incast(*sets: str) -> ethlink.Scenario:
    """incast-cbfc, 8:1 and 256 KiB per sender unless overridden."""
    return scenarios.load("incast-cbfc", ["topology.hosts=9", "workload.0.senders=8",
                                          'workload.0.size="256KiB"', *sets])


def traced(sc: ethlink.Scenario, until: int | None = None):
    sim = Simulation(sc, trace="hop")
    recs = []
    res = sim.run(until, trace_sink=recs.append)
    batch = T.records_to_batch(np.concatenate(recs))
    table = pa.Table.from_batches([batch]).replace_schema_metadata(T.simulation_metadata(sim) | {"complete": "true"})
    return sim, res, table


def cells(size, cell):
    return -(-np.asarray(size, dtype=np.int64) // cell)


def credit_replay(res, table, cell: int):
    """Walk the trace in order: per (port, prio), cells sent (cumulative, first
    transmissions only) and the freed count last received. Returns the largest excess
    of cells in the receiver over the limit (<= 0 if the limit held) and how often the
    sender was exactly at its limit after a frame."""
    ev, kind = T.codes(table, "event"), T.codes(table, "kind")
    port, prio, size, node, dst, addr, pkt = (table[c].to_numpy() for c in
                                             ("port", "prio", "size", "node", "dst", "addr", "pkt"))
    tx, cr, rep = T.EVENT_NAMES.index("tx_start"), T.EVENT_NAMES.index("credit"), T.EVENT_NAMES.index("llr_replay")
    replayed = set(zip(pkt[ev == rep].tolist(), port[ev == rep].tolist()))
    limits = res.queues["cbfc_limit"].reshape(-1, 8)
    used: dict[tuple[int, int], int] = {}
    freed: dict[tuple[int, int], int] = {}
    worst, at_limit, frames = -(1 << 62), 0, 0
    for i in np.nonzero(((ev == tx) & ~np.isin(kind, CONTROL)) | ((ev == cr) & (node == dst)))[0].tolist():
        key = (int(port[i]), int(prio[i]))
        limit = int(limits[key])
        if limit == 0:
            continue
        if ev[i] == cr:                                      # an update reached the sender
            assert addr[i] >= freed.get(key, 0)
            freed[key] = int(addr[i])
            continue
        if (int(pkt[i]), key[0]) in replayed:                # an LLR replay uses no new credit
            continue
        used[key] = used.get(key, 0) + int(cells(size[i], cell))
        excess = used[key] - freed.get(key, 0) - limit
        worst = max(worst, excess)
        at_limit += excess > -cells(size[i], cell)           # no room for another such frame
        frames += 1
    return worst, at_limit, frames, used


# --- the limit -----------------------------------------------------------------------------------

@pytest.mark.parametrize("credits", ["16KiB", "0"])
def test_a_sender_never_holds_more_cells_than_its_limit(credits):
    """With the default limit (covering the credit loop) and with a tight one (16 KiB:
    about 4 frames), reconstructed from tx_start and credit rows only."""
    sc = incast(f'cbfc.credits="{credits}"' if credits != "0" else "cbfc.credits=0")
    sim, res, table = traced(sc)
    s = res.summary
    assert s["flows_completed"] == s["flows_total"] == 8 and s["packets_dropped"] == 0
    assert s["pfc_pause_frames"] == 0
    worst, at_limit, frames, used = credit_replay(res, table, sc.cbfc.cell)
    assert frames > 8 * 64 and worst <= 0
    if credits != "0":
        assert at_limit > 0 and s["credits_stalled_ps"] > 0       # the limit did bind
        assert res.queues["cbfc_limit"].max() == -(-16 * 1024 // sc.cbfc.cell)
    # the engine's own counters agree with the trace
    q = res.queues.reshape(-1, 8)
    for (p, pr), n in used.items():
        assert q["cbfc_used"][p, pr] == n


def test_cells_are_conserved_on_every_link():
    """At the end every cell a sender used was freed by its receiver, and the sender
    heard of all but less than one update's worth."""
    sc = incast()
    res = Simulation(sc).run()
    q = res.queues.reshape(-1, 8)
    peer = res.ports["peer"]
    update = -(-(sc.cbfc.update_bytes or sc.host.mtu + 64) // sc.cbfc.cell)
    pr = sc.cbfc.priorities[0]
    active = np.nonzero(q["cbfc_used"][:, pr] > 0)[0]
    assert len(active) >= 2 * 8
    assert (q["cbfc_rx_freed"][peer[active], pr] == q["cbfc_used"][active, pr]).all()
    lag = q["cbfc_used"][active, pr] - q["cbfc_freed"][active, pr]
    assert ((lag >= 0) & (lag < update)).all()


# --- update frames ----------------------------------------------------------------------------------

def test_credit_updates_are_64_byte_frames_every_update_threshold():
    sc = incast()
    sim, res, table = traced(sc)
    info = T.TraceInfo.of(table)
    ev, kind = T.codes(table, "event"), T.codes(table, "kind")
    c = np.nonzero(kind == T.FRAME_KINDS.index("cbfc"))[0]
    assert len(c) and (table["size"].to_numpy()[c] == 64).all()
    sent = c[(ev[c] == T.EVENT_NAMES.index("credit")) & (table["node"].to_numpy()[c] == table["src"].to_numpy()[c])]
    got = c[(ev[c] == T.EVENT_NAMES.index("credit")) & (table["node"].to_numpy()[c] == table["dst"].to_numpy()[c])]
    assert len(sent) == len(got) == res.summary["cbfc_updates"] == int(res.ports["cbfc_updates"].sum())
    update = -(-(sc.cbfc.update_bytes or sc.host.mtu + 64) // sc.cbfc.cell)
    port, addr, pkt = (table[k].to_numpy() for k in ("port", "addr", "pkt"))
    for p in np.unique(port[sent]):
        vals = addr[sent][port[sent] == p]
        assert vals[0] >= update and (np.diff(vals) >= update).all()
    # what was sent is what arrived, frame by frame
    assert dict(zip(pkt[sent].tolist(), addr[sent].tolist())) == dict(zip(pkt[got].tolist(), addr[got].tolist()))
    # each rebuilds as an ethlink CBFC frame carrying the count, addressed along its link
    for i in np.concatenate([sent[:20], got[:20]]).tolist():
        row = table.slice(i, 1).to_pylist()[0]
        pkt_ = fr.decode(fr.build_frame(TP.frame_row(row, info)))
        assert pkt_[fr.ELCredit].credits == row["addr"] and pkt_[fr.ELCredit].vc == row["prio"]
        sender_port = row["port"] if row["node"] == row["src"] else int(info.port_peer[row["port"]])
        assert pkt_.src == fr.build._mac(fr.mac_of_port(sender_port))


# --- tight credits ----------------------------------------------------------------------------------

def test_tiny_credits_stall_the_link_but_drop_nothing():
    default = Simulation(incast()).run()
    tiny = Simulation(incast('cbfc.credits="9KiB"')).run()
    for r in (default, tiny):
        s = r.summary
        assert s["flows_completed"] == s["flows_total"] and s["packets_dropped"] == 0 and s["pfc_pause_frames"] == 0
    assert tiny.summary["credits_stalled_ps"] > default.summary["credits_stalled_ps"]
    last = [max(r.flows_table()["finish_ps"].to_pylist()) for r in (default, tiny)]
    assert last[1] > last[0]
    assert tiny.summary["buffer_hwm_bytes"]["sw0"] < default.summary["buffer_hwm_bytes"]["sw0"]


def test_credits_below_one_frame_are_refused_before_the_run():
    with pytest.raises(ScenarioError, match=r"^cbfc\.credits"):
        incast('cbfc.credits="1KiB"')


# --- with bit errors -----------------------------------------------------------------------------------

def test_cbfc_with_llr_replays_without_losing_credits():
    sc = incast("link.ber=1e-5", "link.llr=true")
    sim, res, table = traced(sc)
    s = res.summary
    assert s["flows_completed"] == s["flows_total"] and s["packets_dropped"] == 0
    assert s["llr_replays"] > 0 and s["retransmitted_packets"] == 0
    worst, _, _, _ = credit_replay(res, table, sc.cbfc.cell)
    assert worst <= 0
    q = res.queues.reshape(-1, 8)
    pr = sc.cbfc.priorities[0]
    active = np.nonzero(q["cbfc_used"][:, pr] > 0)[0]
    assert (q["cbfc_rx_freed"][res.ports["peer"][active], pr] == q["cbfc_used"][active, pr]).all()


def test_cbfc_without_llr_recovers_from_fcs_drops():
    # a tail loss is repaired by the RoCE timeout: a short one (131 us), not the IBA default
    sc = incast("link.ber=1e-5", "link.llr=false", "roce.timeout=5")
    res = Simulation(sc).run(until=50 * 10**9)
    s = res.summary
    assert s["fcs_drops"] > 0
    assert s["flows_completed"] == s["flows_total"]
