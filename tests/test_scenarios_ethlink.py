"""The built-in EthLink scenarios (issue 4) and what each must show.

Expected values are derived here from the wire model and the frame formats
(`ethlink.frames`), never copied from a run: a frame of `size` bytes (FCS included)
reaches the next node ser(8 + size) + delay after its first bit left, or ser(8 + 64) +
delay for a frame longer than 64 B entering a cut-through switch whose egress is not
faster; the receiving node adds its latency. Load/Store frames: ethlink v1 = Ether 14 +
802.1Q 4 + base 8 + FCS 4 + 16 B per transaction + data (at least 64 B); RoCEv2 frames
from `frames.roce_frame_bytes`. Relations between runs (strict class vs shared class vs
idle; LLR on vs off vs error-free) are asserted as relations, and the figures printed
(`pytest -s`) for the report.

Also here: every Load/Store, CBFC and RoCE frame of a traced ethlink run rebuilds through
`ethlink.frames.build_frame` at its traced length (`ethlink.tracepcap` with the run's
op table), and tshark finds nothing malformed in a capture of it.
"""
from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest

import ethlink
from conftest import NS, run_traced, ser
from ethlink import frames as fr
from ethlink import scenarios
from ethlink import trace as T
from ethlink import tracepcap as TP
from ethlink.frames import fields as F
from ethlink.sim import Simulation

EO, RO = F.ElOpcode, F.RoceOpcode
KINDS = ("load", "store", "store_ack", "fadd", "cas", "fence")     # engine LsKind order
CT_HEADER, PREAMBLE, WIRE_EXTRA = 64, 8, 20


def run(name: str, *sets: str, **kw):
    sc = scenarios.load(name, list(sets))
    sim = Simulation(sc, **kw)
    return sim, sim.run()


# --- frame sizes from the formats ---------------------------------------------------------

def el_frames(kind: str, size: int) -> tuple[int, int | None]:
    """(request, response) ethlink v1 frame bytes of one operation; None: no response."""
    req = {"load": [(EO.LOAD_REQ, size)], "store": [(EO.STORE, size)], "store_ack": [(EO.STORE, size)],
           "fadd": [(EO.ATOMIC_FADD, 8)], "cas": [(EO.ATOMIC_CAS, 8)]}[kind]
    resp = {"load": [(EO.LOAD_RESP, size)], "store": None, "store_ack": [(EO.STORE_ACK, size)],
            "fadd": [(EO.ATOMIC_RESP, 8)], "cas": [(EO.ATOMIC_RESP, 8)]}[kind]
    return F.ethlink_frame_bytes(req), F.ethlink_frame_bytes(resp) if resp else None


def roce_frames(kind: str, size: int) -> tuple[int, int | None]:
    """(request, response) RoCEv2 frame bytes of one operation (IBA opcodes, payload
    padded to 4 B)."""
    pad = (4 - size % 4) % 4
    req = {"load": F.roce_frame_bytes(RO.READ_REQUEST), "store": F.roce_frame_bytes(RO.WRITE_ONLY, size, pad),
           "store_ack": F.roce_frame_bytes(RO.WRITE_ONLY, size, pad), "fadd": F.roce_frame_bytes(RO.FETCH_ADD),
           "cas": F.roce_frame_bytes(RO.CMP_SWAP)}[kind]
    resp = {"load": F.roce_frame_bytes(RO.READ_RESPONSE_ONLY, size, pad), "store": None,
            "store_ack": F.roce_frame_bytes(RO.ACK), "fadd": F.roce_frame_bytes(RO.ATOMIC_ACK),
            "cas": F.roce_frame_bytes(RO.ATOMIC_ACK)}[kind]
    return req, resp


def one_way(frame: int, hops) -> int:
    """ps from the first bit leaving the source NIC to the frame being processed at the
    destination, on an idle path. hops: (rate, delay, receiver latency, receiver is a
    cut-through switch, its egress rate or None)."""
    t = 0
    for rate, delay, lat, ct, out_rate in hops:
        if ct and frame > CT_HEADER and out_rate is not None and out_rate <= rate:
            t += ser(PREAMBLE + CT_HEADER, rate) + delay + lat
        else:
            t += ser(PREAMBLE + frame, rate) + delay + lat
    return t


def op_latency(kind, size, frames_of, hops_there, hops_back, target_ps) -> int:
    req, resp = frames_of(kind, size)
    if resp is None:                                   # posted store: data at the target
        return one_way(req, hops_there)
    return one_way(req, hops_there) + target_ps + one_way(resp, hops_back)


def star_hops(sc):
    t, sw, h = sc.topology, sc.switch, sc.host
    return [(t.rate_bps, t.delay_ps, sw.latency_ps, sw.cut_through, t.rate_bps),
            (t.rate_bps, t.delay_ps, h.latency_ps, False, None)]


# --- ls-idle ------------------------------------------------------------------------------

@pytest.mark.parametrize("header, frames_of", [("ethlink", el_frames), ("roce", roce_frames)])
def test_ls_idle_latency_is_the_analytic_sum_to_the_picosecond(header, frames_of):
    """Every op kind alone on the idle 800G star: serialization and propagation both ways,
    switch (cut-through for frames > 64 B) and NIC latencies, and the target's memory
    latency between request arrival and response start."""
    sim, res = run("ls-idle", f'ls.header="{header}"')
    sc = sim.scenario
    hops = star_hops(sc)
    ops = res.ls_ops
    assert len(ops) == len(sc.ls_ops) == 6
    got, want = [], []
    for spec, op in zip(sc.ls_ops, ops):
        assert KINDS[op["kind"]] == spec["kind"] and op["start_ps"] == op["issue_ps"] == spec["time_ps"]
        got.append(int(op["complete_ps"] - op["start_ps"]))
        want.append(op_latency(spec["kind"], spec["size"], frames_of, hops, hops, sc.ls.target_latency_ps))
    print(f"\nls-idle ({header}) latency ps by op:", dict(zip((s["kind"] for s in sc.ls_ops), got)))
    if header == "roce":
        # atomics: see test_roce_atomic_acknowledge_is_a_78_byte_frame (an engine bug)
        keep = [i for i, spec in enumerate(sc.ls_ops) if spec["kind"] not in ("fadd", "cas")]
        got, want = [got[i] for i in keep], [want[i] for i in keep]
    assert got == want
    # The 64 B load by hand, as the issue states it (ethlink header): 64 B request
    # (store-and-forward at the switch), 110 B response (cut-through).
    if header == "ethlink":
        r800 = 800 * 10**9
        req = 2 * (ser(8 + 64, r800) + 10 * NS) + 150 * NS + 50 * NS
        resp = ser(8 + 64, r800) + 10 * NS + 150 * NS + ser(8 + 110, r800) + 10 * NS + 50 * NS
        assert got[0] == req + 100 * NS + resp
    s = res.summary["ls"]
    assert s["count"] == s["total"] == 6 and s["retries"] == 0
    assert s["min_ps"] == min(got) and s["max_ps"] == max(got)


def test_roce_atomic_acknowledge_is_a_78_byte_frame(tmp_path):
    """FETCH_ADD / CMP_SWAP over RoCEv2: the response is BTH + AETH + AtomicAckETH (IBA
    9.4.5), 78 B with FCS and no payload; the idle latency follows from it."""
    path = tmp_path / "t.arrow"
    sim = Simulation(scenarios.load("ls-idle", ['ls.header="roce"']), trace="endpoints")
    with T.TraceWriter.for_simulation(sim, path) as w:
        res = sim.run(trace_sink=w.write)
    table = T.read_trace(path)
    sel, _ = TP.select(table, events=["tx_start"])
    acks = [r for r in TP.rows(sel) if r["kind"] == "roce" and r["opcode"] == RO.ATOMIC_ACK]
    assert F.roce_frame_bytes(RO.ATOMIC_ACK) == 78 and len(acks) == 2
    hops = star_hops(sim.scenario)
    lat = [int(op["complete_ps"] - op["start_ps"]) for op in res.ls_ops[4:]]
    want = [op_latency(k, 8, roce_frames, hops, hops, sim.scenario.ls.target_latency_ps) for k in ("fadd", "cas")]
    assert ([r["size"] for r in acks], lat) == ([78, 78], want)


# --- ls-under-rdma ------------------------------------------------------------------------

def test_ls_under_rdma_strict_class_near_idle_shared_class_orders_of_magnitude_worse():
    sim, strict = run("ls-under-rdma")
    _, shared = run("ls-under-rdma", "ls.prio=3")
    src = copy.deepcopy(sim.scenario.source)
    del src["workload"]                                # the same Load/Store ops, fabric idle
    idle = Simulation(ethlink.Scenario.from_dict(src)).run()
    p99 = {k: r.summary["ls"]["p99_ps"] for k, r in (("idle", idle), ("strict", strict), ("shared", shared))}
    print(f"\nls-under-rdma LS p99: idle {p99['idle'] / 1e6:.3f} us, strict class {p99['strict'] / 1e6:.3f} us, "
          f"shared class {p99['shared'] / 1e6:.3f} us ({p99['shared'] / p99['strict']:.0f} x strict)")
    for r in (idle, strict, shared):
        s = r.summary["ls"]
        assert s["count"] == s["total"] == len(r.ls_ops)
    assert idle.summary["ls"]["retries"] == strict.summary["ls"]["retries"] == 0
    for r in (strict, shared):
        assert r.summary["flows_completed"] == r.summary["flows_total"] > 0
        assert r.summary["packets_dropped"] == 0
    assert strict.ls_ops["issue_ps"].min() > 0        # Load/Store starts once the all-to-all runs
    assert p99["idle"] <= p99["strict"] <= 3 * p99["idle"]
    assert p99["shared"] >= 20 * p99["strict"]


# --- ls-efficiency --------------------------------------------------------------------------

def test_ls_efficiency_table_matches_the_frame_formats():
    """payload / (frame + 20) for 64/128/256 B posted stores: ethlink v1 alone, RoCEv2
    WRITE_ONLY, and ethlink coalesced into frames of at most 1024 B."""
    table = {}
    for size in (64, 128, 256):
        for header in ("ethlink", "roce"):
            for co in (0, 1024):
                sim, res = run("ls-efficiency", f"loadstore.0.sizes=[{size}]", f'ls.header="{header}"',
                               f"ls.coalesce={co}")
                s = res.summary["ls"]
                n = s["count"]
                assert n == s["total"] == 8 * sim.scenario.loadstore[0]["ops"]
                assert s["payload_bytes"] == n * size
                if header == "roce" or co == 0:
                    frame = (roce_frames if header == "roce" else el_frames)("store", size)[0]
                    assert s["frames"] == n and s["wire_bytes"] == n * (frame + WIRE_EXTRA)
                    assert s["efficiency"] == size / (frame + WIRE_EXTRA)
                else:
                    base = F.ETHER_BYTES + F.DOT1Q_BYTES + F.EL_BASE.size + F.FCS_BYTES   # 30 B
                    per = F.ethlink_frame_bytes([(EO.STORE, size)] * 2) - F.ethlink_frame_bytes([(EO.STORE, size)])
                    most = (co - base) // per                              # transactions per frame
                    full = base + most * per
                    assert F.ethlink_frame_bytes([(EO.STORE, size)] * most) == full <= co
                    per_gpu = -(-sim.scenario.loadstore[0]["ops"] // most)
                    assert s["frames"] >= 8 * per_gpu                      # no frame beyond `most`
                    # the frames actually sent: F frames carrying n transactions in all
                    assert s["wire_bytes"] == s["frames"] * (base + WIRE_EXTRA) + n * per
                    assert s["efficiency"] == pytest.approx(n * size / s["wire_bytes"], rel=1e-12)
                    ideal = most * size / (full + WIRE_EXTRA)
                    assert s["efficiency"] == pytest.approx(ideal, rel=1e-2)
                table[(size, header, co)] = s["efficiency"]
    print("\nls-efficiency (payload / wire bytes incl. preamble and IFG):")
    print("  size  ethlink  ethlink+coalesce1024  roce")
    for size in (64, 128, 256):
        print(f"  {size:4d}  {table[size, 'ethlink', 0]:.4f}   {table[size, 'ethlink', 1024]:.4f}"
              f"                {table[size, 'roce', 0]:.4f}")
    for size in (64, 128, 256):
        assert table[size, "roce", 1024] == table[size, "roce", 0]     # RoCE frames carry one op
        assert table[size, "ethlink", 1024] > table[size, "ethlink", 0] > table[size, "roce", 0]
    assert table[64, "ethlink", 0] == 64 / 130 and table[64, "roce", 0] == 64 / 166


# --- llr-ber ----------------------------------------------------------------------------------

def _all_complete(res):
    s = res.summary
    assert s["flows_completed"] == s["flows_total"] > 0
    assert s["ls"]["count"] == s["ls"]["total"] == (res.ls_ops["kind"] != KINDS.index("fence")).sum()
    assert (res.ls_ops["complete_ps"] >= res.ls_ops["start_ps"]).all() and (res.ls_ops["start_ps"] >= 0).all()


def test_llr_ber_repairs_hop_by_hop_with_no_end_to_end_retransmission():
    _, on = run("llr-ber")
    _, off = run("llr-ber", "link.llr=false")
    _, clean = run("llr-ber", "link.ber=0")
    for r in (on, off, clean):
        _all_complete(r)
    s = on.summary
    assert s["ls"]["retries"] == 0 and s["retransmitted_packets"] == 0 and s["timeouts"] == 0
    assert s["llr_replays"] > 0 and s["fcs_errors"] > 0 and s["fcs_drops"] == 0
    assert s["llr_replays"] >= s["fcs_errors"]                     # each corrupted frame goes again
    assert s["packets_dropped"] == 0
    o = off.summary
    assert o["fcs_drops"] > 0 and o["llr_replays"] == 0
    assert o["fcs_drops"] == o["fcs_errors"] == o["drops"]["fcs"]
    assert o["retransmitted_packets"] > 0 or o["ls"]["retries"] > 0
    c = clean.summary
    assert c["llr_replays"] == c["fcs_errors"] == c["fcs_drops"] == 0 and c["ls"]["retries"] == 0
    p99 = {k: r.summary["ls"]["p99_ps"] for k, r in (("llr", on), ("no_llr", off), ("ber0", clean))}
    print(f"\nllr-ber LS p99: ber 0 {p99['ber0'] / 1e6:.3f} us, LLR on {p99['llr'] / 1e6:.3f} us "
          f"(penalty {(p99['llr'] - p99['ber0']) / 1e3:.0f} ns, x{p99['llr'] / p99['ber0']:.2f}), "
          f"LLR off {p99['no_llr'] / 1e6:.3f} us; replays {s['llr_replays']} for {s['fcs_errors']} FCS errors; "
          f"LLR off: {o['fcs_drops']} FCS drops, {o['retransmitted_packets']} RoCE retransmissions, "
          f"{o['ls']['retries']} LS retries")
    assert p99["llr"] >= p99["ber0"]


# --- incast-cbfc --------------------------------------------------------------------------------

def _roce_write_wire_bytes(size: int, mtu: int) -> int:
    """Wire bytes (frames + preamble + IFG) of one RoCE WRITE of `size` bytes."""
    n = -(-size // mtu)
    if n == 1:
        return F.roce_frame_bytes(RO.WRITE_ONLY, size, (4 - size % 4) % 4) + WIRE_EXTRA
    last = size - (n - 1) * mtu
    return (F.roce_frame_bytes(RO.WRITE_FIRST, mtu) + (n - 2) * F.roce_frame_bytes(RO.WRITE_MIDDLE, mtu)
            + F.roce_frame_bytes(RO.WRITE_LAST, last, (4 - last % 4) % 4) + n * WIRE_EXTRA)


def test_incast_cbfc_no_drop_no_pause_near_analytic_completion():
    sim, res = run("incast-cbfc")
    _, pfc = run("incast-pfc")
    sc = sim.scenario
    s = res.summary
    w = sc.workloads[0]
    senders = len(w["senders"])
    assert s["packets_dropped"] == 0 and s["drops"] == {}
    assert s["pfc_pause_frames"] == 0 and s["pfc_pause_frames_received"] == 0
    assert s["cbfc_updates"] > 0 and s["flows_completed"] == s["flows_total"] == senders
    assert s["retransmitted_packets"] == 0
    rate, delay = sc.topology.rate_bps, sc.topology.delay_ps
    total = senders * _roce_write_wire_bytes(w["size"], sc.host.mtu)
    first = F.roce_frame_bytes(RO.WRITE_FIRST, sc.host.mtu)
    base = (ser(PREAMBLE + first, rate) + delay + sc.switch.latency_ps      # first frame to the switch
            + delay + sc.host.latency_ps - ser(WIRE_EXTRA - PREAMBLE, rate))  # last frame: its IFG aside
    analytic = ser(total, rate) + base
    last = max(res.flows_table()["finish_ps"].to_pylist())
    print(f"\nincast-cbfc: last completion {last / 1e6:.3f} us, analytic {analytic / 1e6:.3f} us "
          f"({(last / analytic - 1) * 100:+.3f} %); switch buffer hwm {s['buffer_hwm_bytes']['sw0']} B "
          f"(incast-pfc: {pfc.summary['buffer_hwm_bytes']['sw0']} B); credits stalled "
          f"{s['credits_stalled_ps'] / 1e6:.1f} us")
    assert analytic <= last <= 1.01 * analytic
    # The switch holds at most every ingress link's credit limit.
    prio = sc.cbfc.priorities[0]
    limit = int(res.queues["cbfc_limit"].reshape(-1, 8)[:, prio].max())
    hwm = s["buffer_hwm_bytes"]["sw0"]
    assert 0 < hwm <= senders * limit * sc.cbfc.cell
    assert hwm * 4 < pfc.summary["buffer_hwm_bytes"]["sw0"]


# --- ethlink-mixed ------------------------------------------------------------------------------

def test_ethlink_mixed_pod_completes_lossless_without_pauses_or_retransmissions():
    sim, res = run("ethlink-mixed")
    s = res.summary
    _all_complete(res)
    assert s["packets_dropped"] == 0 and s["pfc_pause_frames"] == 0
    assert s["retransmitted_packets"] == 0 and s["ls"]["retries"] == 0 and s["fcs_drops"] == 0
    assert s["cbfc_updates"] > 0 and s["llr_replays"] >= s["fcs_errors"] > 0
    ls = s["ls"]
    for key in ("count", "p50_ps", "p99_ps", "p999_ps", "max_ps", "ops_per_s", "efficiency"):
        assert ls[key] is not None and ls[key] > 0, key
    assert ls["p50_ps"] <= ls["p99_ps"] <= ls["p999_ps"] <= ls["max_ps"]
    assert "credits_stalled_ps" in s and "llr_replays" in s
    # relaxed ordering: every fence waited for the acknowledged operations before it
    ops = res.ls_ops
    fence = KINDS.index("fence")
    for g in range(sim.scenario.topology.hosts):
        mine = ops[ops["src"] == g]
        acked = (mine["kind"] != fence) & (mine["kind"] != KINDS.index("store"))
        last_done = np.maximum.accumulate(np.where(acked, mine["complete_ps"], -1))
        f = np.nonzero(mine["kind"] == fence)[0]
        assert len(f) and (mine["start_ps"][f] >= last_done[f - 1]).all()
    print(f"\nethlink-mixed: {ls['count']} LS ops, p50 {ls['p50_ps'] / 1e3:.0f} ns, p99 {ls['p99_ps'] / 1e3:.0f} ns, "
          f"{ls['ops_per_s'] / 1e6:.0f} M ops/s, efficiency {ls['efficiency']:.3f}; {s['llr_replays']} replays, "
          f"{s['cbfc_updates']} credit updates")


# --- frames of a traced ethlink run rebuild -------------------------------------------------------

SMALL_MIXED = ("topology.hosts=8", "topology.planes=2", 'workload.0.size="16KiB"', "loadstore.0.ops=120",
               "link.ber=1e-6")


@pytest.fixture(scope="module")
def mixed_trace(tmp_path_factory):
    """A hop-level trace of a small ethlink-mixed pod (coalesced ethlink frames, CBFC
    credit updates, LLR replays, RoCE WRITEs), and the run's op table."""
    path = tmp_path_factory.mktemp("mixed") / "trace.arrow"
    return path, *run_traced(scenarios.load("ethlink-mixed", list(SMALL_MIXED)), path)


def _frames_once(table: pa.Table, kinds: set[str], ls_only: bool = False) -> pa.Table:
    """The first row of every packet of the given kinds (each frame once)."""
    kind = T.codes(table, "kind")
    pkt = table["pkt"].to_numpy()
    keep = (pkt >= 0) & np.isin(kind, [T.FRAME_KINDS.index(k) for k in kinds])
    keep &= T.codes(table, "event") != T.EVENT_NAMES.index("txn")         # transactions, not frames
    if ls_only:
        keep &= (table["flags"].to_numpy() & TP.PF_LS) != 0
    idx = np.nonzero(keep)[0]
    _, first = np.unique(pkt[idx], return_index=True)
    return table.take(pa.array(np.sort(idx[first])))


def _check_ls_frame(row, raw, res):
    """The decoded frame carries the traced frame's transactions."""
    pkt = fr.decode(raw)
    ops = res.ls_ops
    if row["kind"] == "ethlink":
        base = pkt[fr.ELBase]
        assert (base.src, base.dst, base.ntx, base.tc) == (row["src"], row["dst"], row["ntx"], row["prio"])
        txns, layer = [], base.payload
        while isinstance(layer, fr.ELTxn):
            txns.append(layer)
            layer = layer.payload
        assert len(txns) == row["ntx"] >= 1
        op = ops[row["flow"]]
        assert (txns[0].tag, txns[0].addr) == (op["tag"], op["addr"])
        data = sum(F.el_data_len(t.opcode, t.length) for t in txns)
        assert data == row["payload"]
        return len(txns)
    return 1


def test_every_ls_cbfc_and_roce_frame_of_a_traced_run_rebuilds(mixed_trace):
    _, table, info, res = mixed_trace
    assert res.summary["ls"]["count"] == res.summary["ls"]["total"] > 0
    sel = _frames_once(table, {"ethlink", "cbfc", "roce", "roce_ack"})
    ls = TP.LsFrames(res.ls_ops, table)
    counts: dict[str, int] = {}
    coalesced = 0
    for r in TP.rows(sel):
        raw = fr.build_frame(TP.frame_row(r, info, ls=ls))      # raises on any length mismatch
        assert len(raw) + F.FCS_BYTES == r["size"]
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
        if r["kind"] == "ethlink":
            coalesced += _check_ls_frame(r, raw, res) > 1
        if r["kind"] == "cbfc":
            credit = fr.decode(raw)[fr.ELCredit]
            assert credit.vc == r["prio"] and credit.credits == r["addr"] > 0 and r["size"] == 64
    print(f"\nrebuilt frames by kind: {counts}; coalesced ethlink frames: {coalesced}")
    assert counts.get("ethlink", 0) > 100 and counts.get("cbfc", 0) > 0 and counts.get("roce", 0) > 0
    assert coalesced > 0
    # every ethlink row (request and response, at every hop) names a rebuildable frame
    kinds, events = T.codes(table, "kind"), T.codes(table, "event")
    assert (table["ntx"].to_numpy()[(kinds == T.FRAME_KINDS.index("ethlink")) & (table["pkt"].to_numpy() >= 0)
                                    & (events != T.EVENT_NAMES.index("txn"))] >= 1).all()


def _without_txn_rows(table: pa.Table) -> pa.Table:
    return table.filter(pa.array(T.codes(table, "event") != T.EVENT_NAMES.index("txn")))


def test_ls_frames_rebuild_from_the_trace_alone(mixed_trace):
    """Three independent ways to the same bytes: the frames' txn rows; the engine's op
    table (Result.ls_ops) with response order from deliver rows; the op table regenerated
    from the trace's scenario_source, corrected by its op_issue rows."""
    _, table, info, res = mixed_trace
    sel = _frames_once(table, {"ethlink"})
    plain = _without_txn_rows(table)
    by_txn = [raw for _, raw in TP.frames(sel, info, context=table)]
    by_ops = [raw for _, raw in TP.frames(sel, info, ls_ops=res.ls_ops, context=plain)]
    regenerated = [raw for _, raw in TP.frames(sel, info, context=plain)]
    assert len(by_txn) == sel.num_rows > 0 and by_ops == by_txn and regenerated == by_txn


def test_every_frame_has_one_txn_row_per_transaction(mixed_trace):
    _, table, _, res = mixed_trace
    ev = T.codes(table, "event")
    txn = table.filter(pa.array(ev == T.EVENT_NAMES.index("txn"))).to_pandas()
    frames = _frames_once(table, {"ethlink"}).to_pandas().set_index("pkt")
    per = txn.groupby("pkt").agg(n=("ntx", "size"), first=("ntx", "min"), last=("ntx", "max"),
                                 data=("payload", "sum"))
    per = per.loc[frames.index]
    assert (per["n"] == frames["ntx"]).all() and (per["first"] == 0).all() and (per["last"] == frames["ntx"] - 1).all()
    assert (per["data"] == frames["payload"]).all()
    ops = res.ls_ops
    assert (txn["psn"].to_numpy() == ops["tag"][txn["flow"]]).all()
    assert (txn["addr"].to_numpy() == ops["addr"][txn["flow"]]).all()


def test_cli_pcap_and_show_rebuild_relaxed_coalesced_frames(mixed_trace, tmp_path):
    """`ethlink pcap` at a switch port of the relaxed, coalesced pod: every frame it
    writes decodes (scapy) to the transactions of that frame's txn rows; `show --pkt`
    prints a coalesced response frame with all its transactions."""
    from click.testing import CliRunner
    from scapy.utils import rdpcap

    from ethlink.cli import main

    path, table, info, _ = mixed_trace
    ev, kind = T.codes(table, "event"), T.codes(table, "kind")
    tx = (ev == T.EVENT_NAMES.index("tx_start")) & (kind == T.FRAME_KINDS.index("ethlink"))
    ports, counts = np.unique(table["port"].to_numpy()[tx], return_counts=True)
    sw_ports = [p for p in ports if info.node_kinds[int(info.port_node[p])] == "switch"]
    port = int(max(sw_ports, key=lambda p: counts[list(ports).index(p)]))
    out = tmp_path / "sw.pcap"
    res = CliRunner().invoke(main, ["pcap", str(path), "-o", str(out), "--port", str(port)])
    assert res.exit_code == 0, res.output
    sel, _ = TP.select(table, ports=[port], events=["tx_start"])
    txn = table.filter(pa.array(ev == T.EVENT_NAMES.index("txn"))).to_pandas().sort_values(["pkt", "ntx"])
    by_pkt = {k: list(zip(g["psn"], g["addr"])) for k, g in txn.groupby("pkt")}
    n_ls = 0
    for r, frame in zip(TP.rows(sel), rdpcap(str(out))):
        if r["kind"] != "ethlink":
            continue
        layer, got = frame[fr.ELBase].payload, []
        while isinstance(layer, fr.ELTxn):
            got.append((layer.tag, layer.addr))
            layer = layer.payload
        assert got == by_pkt[r["pkt"]]
        n_ls += 1
    assert n_ls == int(counts[list(ports).index(port)]) > 0
    resp = (T.codes(table, "event") == T.EVENT_NAMES.index("tx_start")) & (table["ntx"].to_numpy() > 1) \
        & ((table["flags"].to_numpy() & TP.PF_RESPONSE) != 0)
    pkt = int(table["pkt"].to_numpy()[resp][0])
    res = CliRunner().invoke(main, ["show", str(path), "--pkt", str(pkt), "--event", "tx_start", "--limit", "1"])
    assert res.exit_code == 0 and "not rebuilt" not in res.output, res.output
    assert res.output.count("ELTxn") == len(by_pkt[pkt]) > 1


@pytest.fixture(scope="module")
def retry_trace(tmp_path_factory):
    """Coalescing with end-to-end retries: bit errors, no LLR, a short timeout."""
    path = tmp_path_factory.mktemp("retry") / "trace.arrow"
    sc = scenarios.load("llr-ber", ["link.llr=false", "link.ber=2e-5", "topology.hosts=4", 'workload.0.size="256KiB"',
                                    "loadstore.0.ops=400", 'ls.coalesce="512B"', 'ls.coalesce_wait="200ns"',
                                    'ls.timeout="3us"', "loadstore.0.mix={load=0.5, store_ack=0.3, fadd=0.1, cas=0.1}"])
    return run_traced(sc, path, "endpoints")


def test_coalesced_frames_with_retries_rebuild_exactly_from_txn_rows(retry_trace):
    """A retried transaction joins whatever frame is open: only the txn rows say which.
    Every frame decodes to the transactions its txn rows name, each the op table's own."""
    table, info, res = retry_trace
    assert res.summary["ls"]["retries"] > 0 and res.summary["ls"]["count"] == res.summary["ls"]["total"]
    ev = T.codes(table, "event")
    txn = table.filter(pa.array(ev == T.EVENT_NAMES.index("txn")))
    t_pkt, t_op, t_pos = (txn[c].to_numpy() for c in ("pkt", "flow", "ntx"))
    retried = {op for op, n in zip(*np.unique(t_op, return_counts=True)) if n > 1}
    sel = _frames_once(table, {"ethlink"})
    ls = TP.ls_frames(info, table)
    assert ls is not None and ls.exact
    mixed_frames = 0
    for r in TP.rows(sel):
        raw = fr.build_frame(TP.frame_row(r, info, ls=ls))
        assert len(raw) + F.FCS_BYTES == r["size"]
        layer, got = fr.decode(raw)[fr.ELBase].payload, []
        while isinstance(layer, fr.ELTxn):
            got.append((layer.tag, layer.addr))
            layer = layer.payload
        ops = t_op[t_pkt == r["pkt"]][np.argsort(t_pos[t_pkt == r["pkt"]])]
        assert got == [(int(res.ls_ops["tag"][o]), int(res.ls_ops["addr"][o])) for o in ops]
        mixed_frames += len(ops) > 1 and bool(retried & set(ops.tolist()))
    assert mixed_frames > 0          # a coalesced frame carrying a retried transaction


@pytest.fixture(scope="module")
def roce_ls_trace(tmp_path_factory):
    """Load/Store over RoCEv2 (every op kind, LLR replays) on a small star, hop level."""
    path = tmp_path_factory.mktemp("rocels") / "trace.arrow"
    sc = scenarios.load("llr-ber", ['ls.header="roce"', "topology.hosts=4", 'workload.0.size="64KiB"',
                                    "loadstore.0.ops=150", "link.ber=1e-5",
                                    "loadstore.0.mix={load=0.4, store=0.2, store_ack=0.2, fadd=0.1, cas=0.1}"])
    return path, *run_traced(sc, path)


def test_ls_over_roce_frames_rebuild_with_their_headers(roce_ls_trace):
    _, table, info, res = roce_ls_trace
    assert res.summary["ls"]["count"] == res.summary["ls"]["total"] > 0
    assert res.summary["llr_replays"] > 0
    sel = _frames_once(table, {"roce"}, ls_only=True)
    ls = TP.LsFrames(res.ls_ops, table)
    seen = set()
    for r in TP.rows(sel):
        seen.add(RO(r["opcode"]).name)
        if r["opcode"] == RO.ATOMIC_ACK:
            continue                    # 86 B in the trace: test_roce_atomic_acknowledge_is_a_78_byte_frame
        raw = fr.build_frame(TP.frame_row(r, info, ls=ls))
        pkt = fr.decode(raw)
        bth = pkt[fr.BTH]
        op = res.ls_ops[r["flow"]]
        assert bth.opcode == r["opcode"] and bth.psn == op["tag"]
        if pkt.haslayer(fr.RETH):
            assert (pkt[fr.RETH].va, pkt[fr.RETH].dlen) == (op["addr"], op["size"])
        if pkt.haslayer(fr.AtomicETH):
            assert pkt[fr.AtomicETH].va == op["addr"]
    assert seen == {"READ_REQUEST", "READ_RESPONSE_ONLY", "WRITE_ONLY", "ACK", "FETCH_ADD", "CMP_SWAP",
                    "ATOMIC_ACK"}


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("which", ["mixed", "roce"])
def test_tshark_finds_no_malformed_frame_in_an_ethlink_capture(which, mixed_trace, roce_ls_trace, tmp_path):
    _, table, info, res = mixed_trace if which == "mixed" else roce_ls_trace
    # the capture point: the host port that sent the most Load/Store frames
    tx, _ = TP.select(table, events=["tx_start"])
    hosts = set(info.hosts)
    ports = [p for p, n in zip(tx["port"].to_pylist(), tx["node"].to_pylist()) if n in hosts]
    port = max(set(ports), key=ports.count)
    out = tmp_path / "cap.pcap"
    rows, idx = TP.select(table, ports=[port], events=["tx_start"])
    # RoCE ATOMIC ACKNOWLEDGE frames are traced 8 B too long (engine bug, see above)
    ok = ~((T.codes(rows, "kind") == T.FRAME_KINDS.index("roce")) & (rows["opcode"].to_numpy() == RO.ATOMIC_ACK))
    if ok.all():
        n = TP.write_trace_pcap(table, info, out, port=port, ls_ops=res.ls_ops)
    else:
        rows = rows.filter(pa.array(ok))
        n = fr.write_pcap(out, TP.frames(rows, info, ls_ops=res.ls_ops, context=table))
    assert n == rows.num_rows > 0
    p = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.len", "-e", "frame.protocols",
                        "-e", "_ws.malformed", "-e", "_ws.expert.severity"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [ln.split("\t") for ln in p.stdout.splitlines()]
    assert len(lines) == n
    assert all(ln[2] == "" for ln in lines), [ln for ln in lines if ln[2]][:3]
    assert [int(ln[0]) for ln in lines] == (rows["size"].to_numpy() - F.FCS_BYTES).tolist()
    kinds = rows["kind"].to_pylist()
    assert all(("infiniband" in ln[1]) == (k in ("roce", "roce_ack", "cnp")) for ln, k in zip(lines, kinds))
