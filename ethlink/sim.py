"""Simulation: compile a validated scenario into the engine's tables, run it, read results.

    sim = ethlink.Simulation(ethlink.Scenario.from_toml("incast.toml"))
    result = sim.run()                  # until no event is left, or run.until
    result.summary["slowdown"]["p99"]   # aggregates: what summary.json holds
    result.flows_table()                # per-flow rows (Arrow; flows_df() for pandas)
    result.write_tables("out")          # out/flows.parquet, qps.parquet, ports.parquet

compile() flattens the scenario into numpy structured arrays whose dtypes the engine
exports (one row per node, port, queue, flow) plus the routing tables (topology.Routes); the engine
updates them in place, so results are read from the same arrays without copying.

Ideal completion time (the denominator of slowdown) is the exact time the flow would take
alone in the empty fabric on its path: its frames pipelined hop by hop, each hop's
serialization (frame + preamble, with inter-frame gap between frames), propagation and
the receiving node's latency, with the same cut-through rule as the engine. A lone flow
therefore has slowdown exactly 1.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _engine
from .scenario import (TRANSPORTS, UET_DATA_HEADER_BYTES, Scenario, ScenarioError, _transports, max_frame_bytes,
                       rto_cap_ps, rto_initial_ps, spine_count)
from .topology import (HOST, SWITCH, Fabric, PortTable, Routes, clockwise_routes, fat_tree, leaf_spine,
                       multiplane_star, ring, route, star)
from .workloads import TRANSPORT_CODES, expand, from_table
from . import loadstore

RAW_OVERHEAD_BYTES = 22      # Ether 14 + 802.1Q 4 + FCS 4 (csrc/flows.pxd)
PREAMBLE_BYTES, IFG_BYTES, MIN_FRAME_BYTES, CT_HEADER_BYTES = 8, 12, 64, 64
DROP_REASONS = ("none", "buffer_full", "queue_limit", "no_route", "fcs", "watchdog", "ttl", "headroom")
SCHED = {"strict": 0, "dwrr": 1}
THRESH = {"static": 0, "dynamic": 1}
ECMP = {"flow": 0, "spray": 1}
TRACE = {"off": 0, "endpoints": 1, "hop": 2}
WD_ACTIONS = {"off": 0, "drop": 1, "ignore": 2}
VERB_NAMES = ("raw", "write", "send", "read", "write_imm", "send_imm")   # csrc Verb order
PS = 10**12


def build_fabric(sc: Scenario) -> Fabric:
    t = sc.topology
    if t.kind == "star":
        return star(t.hosts, t.rate_bps, t.delay_ps)
    if t.kind == "multiplane-star":
        return multiplane_star(t.hosts, t.planes, t.rate_bps, t.delay_ps)
    if t.kind == "leaf-spine":
        return leaf_spine(t.leaves, t.hosts_per_leaf, spine_count(t), t.rate_bps,
                          t.uplink_rate_bps, t.delay_ps, t.fabric_delay_ps)
    if t.kind == "ring":
        return ring(t.switches, t.hosts_per_switch, t.rate_bps, t.delay_ps, t.fabric_delay_ps,
                    t.uplink_rate_bps)
    return fat_tree(t.k, t.rate_bps, t.delay_ps, t.fabric_delay_ps, t.uplink_rate_bps)


def bytes_on_wire(ps, rate_bps) -> np.ndarray:
    """Bytes a link of `rate_bps` carries in `ps` picoseconds, rounded up: exact in int64
    where ps x rate fits (below 9.2e18), else in float64 plus one byte (an upper bound;
    e.g. a 100 us response time at 400G overflowed int64 and gave a small headroom)."""
    ps, rate = np.broadcast_arrays(np.asarray(ps, dtype=np.int64), np.asarray(rate_bps, dtype=np.int64))
    fits = ps <= (2**63 - 1) // np.maximum(rate, 1)
    exact = -((-np.where(fits, ps, 0) * rate) // (8 * PS))
    approx = np.ceil(ps.astype(np.float64) * rate.astype(np.float64) / (8.0 * PS)).astype(np.int64) + 1
    return np.where(fits, exact, approx)


def ser_ps(nbytes, rate_bps):
    """Exact serialization time, ceil(bits * 1e12 / rate), as the engine computes it."""
    return -((-np.asarray(nbytes, dtype=np.int64) * 8 * PS) // rate_bps)


def raw_frame_bytes(payload):
    return np.maximum(np.asarray(payload, dtype=np.int64) + RAW_OVERHEAD_BYTES, MIN_FRAME_BYTES)


@dataclass
class Compiled:
    fabric: Fabric
    port_table: PortTable
    nodes: np.ndarray
    ports: np.ndarray
    queues: np.ndarray
    flows: np.ndarray
    qps: np.ndarray
    host_node: np.ndarray
    routes: Routes
    ideal_fct_ps: np.ndarray
    dependents: tuple
    ls_ops: np.ndarray
    ls_gpus: np.ndarray
    warnings: list
    hpcc_base_rtt_ps: int = 0       # HPCC's T when hpcc.base_rtt is 0 (hpcc_base_rtt_ps), else 0


_HUGE_OUTSIDE: list[bool] = []      # numpy's huge-page setting outside each compile in progress


@contextmanager
def _huge_pages(allowed: bool | None):
    """Whether numpy may ask the kernel for transparent huge pages (it does, by madvise,
    for every array of 4 MiB or more) for the arrays allocated inside; None: as outside
    the compile in progress (numpy's own setting, NUMPY_MADVISE_HUGEPAGE).

    NOTE: compiling the million-flow all-to-all allocates about 1.1 GB, and on this
    project's VM a huge page that was not freed moments before costs about 2.4 ms per MB
    to fault in (1.25 s for a 528 MB array, nearly all system time), an ordinary 4 KiB
    page 0.47 ms per MB whatever ran before. The compile's temporaries therefore get
    ordinary pages, and the tables the engine keeps (flows, QPs) numpy's setting: on
    ordinary pages the engine's run over them was 5 to 11 % slower (TLB misses)."""
    setter = _madvise_setter()
    if setter is None or (allowed is None and not _HUGE_OUTSIDE):
        yield
        return
    was = setter(_HUGE_OUTSIDE[-1] if allowed is None else allowed)
    if allowed is not None:
        _HUGE_OUTSIDE.append(was)
    try:
        yield
    finally:
        if allowed is not None:
            _HUGE_OUTSIDE.pop()
        setter(was)


def _madvise_setter():
    """numpy's switch for its huge-page madvise (private: numpy 1.x and 2.x have it under
    these two names), or None, when a numpy without it just keeps its own setting."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return None
    return _set_madvise_hugepage


def compile_scenario(sc: Scenario, workload=None, on_step: Callable[[str], None] | None = None) -> Compiled:
    """Flatten a scenario into engine tables; `workload` (an operation table, see
    ethlink.workloads.from_table) replaces the scenario's own flows and workloads;
    `on_step(name)` is told each step (fabric, routes, ports, flows, ideal FCTs, QPs)."""
    with _huge_pages(False):
        return _compile(sc, workload, on_step)


def _compile(sc: Scenario, workload, on_step) -> Compiled:
    step = on_step or (lambda name: None)
    step("fabric")
    fabric = build_fabric(sc)
    step("routes")
    pt = fabric.ports()
    if sc.topology.kind == "ring" and sc.topology.routing == "clockwise":
        routes = clockwise_routes(fabric, pt)
    else:
        routes = route(fabric, pt)

    step("ports")
    nodes = np.zeros(fabric.n_nodes, dtype=_engine.NODE_DTYPE)
    kinds = np.asarray(fabric.kinds)
    nodes["kind"] = kinds
    nodes["first_port"] = pt.first
    nodes["nports"] = pt.count
    nodes["host"] = -1
    nodes["host"][fabric.hosts] = np.arange(fabric.n_hosts)
    sw = kinds == SWITCH
    nodes["latency_ps"] = sc.host.latency_ps
    nodes["ecmp"] = ECMP[sc.host.ecmp]
    for i in np.nonzero(sw)[0]:
        t = sc.switch.tier(fabric.tiers[i])            # per-tier settings ([switch.tiers.X])
        nodes["latency_ps"][i] = t.latency_ps
        nodes["buffer_bytes"][i] = t.buffer_bytes
        nodes["threshold"][i] = THRESH[t.threshold]
        nodes["cut_through"][i] = int(t.cut_through)
        nodes["alpha"][i] = t.alpha
        nodes["queue_limit"][i] = t.queue_limit_bytes
        nodes["ecmp"][i] = ECMP[t.ecmp]

    ports = np.zeros(len(pt.node), dtype=_engine.PORT_DTYPE)
    ports["node"] = pt.node
    ports["peer"] = pt.peer
    ports["rate_bps"] = pt.rate_bps
    ports["delay_ps"] = pt.delay_ps
    ports["sched"] = SCHED[sc.ports.scheduler]
    ports["ber"] = sc.link.ber
    ports["llr"] = int(sc.link.llr)

    queues = np.zeros(8 * len(ports), dtype=_engine.QUEUE_DTYPE)
    queues["head"] = -1
    queues["tail"] = -1
    queues["weight"] = np.tile(np.asarray(sc.ports.weights, dtype=np.int32), len(ports))
    queues["pause_start"] = -1
    queues["pause_since"] = -1
    qv = queues.reshape(-1, 8)
    sw_port = sw[pt.node]
    nodes["shared_bytes"] = nodes["buffer_bytes"]
    queues["dl_head"] = -1
    warnings: list[str] = []
    if sc.pfc.enabled:
        prios = list(sc.pfc.priorities)
        max_frame = max_frame_bytes(sc)
        # a port's ingress bytes are counted after its own node's pipeline latency
        hr = pfc_headroom_bytes(pt.rate_bps, pt.delay_ps, max_frame, sc.pfc.response_ps,
                                nodes["latency_ps"][pt.node])
        per_pg = np.full(len(hr), sc.pfc.headroom_bytes) if sc.pfc.headroom_bytes else hr
        for pr in prios:
            qv["xoff"][:, pr] = sc.pfc.xoff_bytes
            qv["headroom"][:, pr] = per_pg
            qv["xon_offset"][:, pr] = sc.pfc.xon_offset_bytes or 2 * max_frame
        warnings += buffer_pools(sc, fabric, pt, nodes, per_pg, hr, len(prios), max_frame)
    if sc.cbfc.enabled:
        max_frame = max_frame_bytes(sc)
        for pr in sc.cbfc.priorities:
            qv["cbfc_limit"][:, pr] = cbfc_credits(sc, pt, nodes, max_frame)
    queues["stall_start"] = -1
    warnings += lossy_admission(sc, fabric, nodes)
    if sc.ecn.enabled:
        for pr in sc.ecn.priorities:
            qv["kmin"][sw_port, pr] = sc.ecn.kmin_bytes
            qv["kmax"][sw_port, pr] = sc.ecn.kmax_bytes
            qv["pmax"][sw_port, pr] = sc.ecn.pmax

    step("flows")
    cols = expand(sc) if workload is None else from_table(workload, fabric.n_hosts, sc.ls.max_size)
    if workload is not None and np.any(cols["verb"] != V_RAW) and sc.host.mtu not in (256, 512, 1024, 2048, 4096):
        raise ScenarioError(f"host.mtu: RoCE operations need an IB path MTU, got {sc.host.mtu}")
    dep = cols.get("dep", np.full(len(cols["src"]), -1))
    flows = _fill_records(_engine.FLOW_DTYPE, len(cols["src"]),
                          {"mtu": sc.host.mtu, "first_tx_ps": -1, "finish_ps": -1, "complete_ps": -1, "next": -1},
                          {**{c: cols[c] for c in ("src", "dst", "size", "start_ps", "prio", "verb")},
                           "npkts": -(-cols["size"] // sc.host.mtu), "deps_left": dep >= 0})
    transport = cols["transport"]
    host_node = np.asarray(fabric.hosts, dtype=np.int32)
    waiting = np.nonzero(dep >= 0)[0]
    by_parent = waiting[np.argsort(dep[waiting], kind="stable")]
    dep_off = np.zeros(len(flows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(dep[waiting], minlength=len(flows)), out=dep_off[1:])
    ls_ops, ls_gpus = loadstore.build_ops(sc, fabric.n_hosts, cols.get("ls"))
    step("ideal FCTs")
    ideal = ideal_fct_ps(flows, sc, nodes, pt, host_node, routes, transport)
    rtt = hpcc_base_rtt_ps(flows, sc, nodes, pt, host_node, routes, transport) \
        if sc.hpcc.enabled and not sc.hpcc.base_rtt_ps else 0
    step("QPs")
    qps = build_qps(flows, sc, pt, host_node, nodes, cols.get("qp_key"), transport)
    return Compiled(fabric, pt, nodes, ports, queues, flows, qps, host_node, routes, ideal,
                    (dep_off.astype(np.int32), by_parent.astype(np.int32)), ls_ops, ls_gpus, warnings, rtt)


def _fmt_bytes(n) -> str:
    n = int(n)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit} ({n:,} B)"
    return f"{n:,} B"


def buffer_pools(sc, fabric, pt, nodes, per_pg, needed, n_prios, max_frame) -> list[str]:
    """Split each switch's buffer into a headroom pool for its lossless priority groups and
    a shared pool (csrc/pfc.pxd). By default the headroom pool reserves every PG's headroom
    in full, and a buffer that cannot hold it and a minimal shared pool is refused here,
    before anything runs, with the size it needs. `pfc.headroom_pool` (a smaller shared
    headroom pool, as SONiC's) and a `pfc.headroom` below the computed need are explicit
    opt-ins: they run, with a warning, and a frame they cannot hold is a headroom violation.
    Returns the warnings."""
    warnings = []
    sw = np.nonzero(nodes["kind"] == SWITCH)[0]
    sw_port = nodes["kind"][pt.node] == SWITCH
    pool_need = np.bincount(pt.node[sw_port], weights=per_pg[sw_port], minlength=len(nodes)).astype(np.int64) * n_prios
    min_shared = 2 * max_frame
    names = fabric.names
    buf = nodes["buffer_bytes"][sw]
    pool = np.full(len(sw), sc.pfc.headroom_pool_bytes) if sc.pfc.headroom_pool_bytes else pool_need[sw]
    short = np.nonzero(pool + min_shared > buf)[0]
    if len(short):                      # the first switch that cannot hold it (a vector test: 10^5 switches)
        j = int(short[0])
        i, b, need = int(sw[j]), int(buf[j]), int(pool[j])
        tier = fabric.tiers[i]
        where = f"switch.tiers.{tier}.buffer" if tier in dict(sc.switch.tiers) else "switch.buffer"
        if sc.pfc.headroom_pool_bytes:
            raise ScenarioError(f"pfc.headroom_pool: {_fmt_bytes(need)} leaves switch {names[i]} "
                                f"(buffer {_fmt_bytes(b)}, {where}) less than {_fmt_bytes(min_shared)} "
                                f"of shared pool; use a smaller pool or a larger {where}")
        nports = int(nodes["nports"][i])
        each = int(per_pg[pt.first[i]]) if nports else 0
        raise ScenarioError(
            f"{where}: {_fmt_bytes(b)} cannot hold the PFC headroom of switch {names[i]}: "
            f"{nports} ports x {n_prios} lossless priorit{'y' if n_prios == 1 else 'ies'} x about "
            f"{_fmt_bytes(each)} (what arrives after XOFF: rate x (2 x cable delay + pipeline + "
            f"response) + 3 maximum frames) = {_fmt_bytes(need)}, plus a shared pool of at least "
            f"{_fmt_bytes(min_shared)}. Use {where} >= {_fmt_bytes(need + min_shared)}, fewer "
            f"lossless priorities, or set pfc.headroom_pool to share a smaller headroom pool "
            f"(an explicit opt-in: lossless frames may then be dropped, counted as headroom violations)")
    nodes["hdrm_pool"][sw] = pool
    nodes["shared_bytes"][sw] = buf - pool
    if sc.pfc.headroom_pool_bytes and np.any(sc.pfc.headroom_pool_bytes < pool_need[sw]):
        worst = sw[np.argmax(pool_need[sw])]
        warnings.append(f"pfc.headroom_pool {_fmt_bytes(sc.pfc.headroom_pool_bytes)} is below the "
                        f"{_fmt_bytes(pool_need[worst])} switch {names[worst]} needs to reserve every lossless "
                        f"port's headroom: lossless frames may be dropped (counted as headroom violations)")
    # The XOFF is refreshed every half pause time, and the refresh may wait behind a maximum
    # frame and another control frame on the reverse link: it must land before the pause
    # lapses, or the sender resumes while its group is still above XOFF (frames beyond the
    # headroom). Cable delay cancels out (the XOFF and its refresh travel the same way):
    # quanta x 512 bits / 2 >= (maximum frame + 64 B control frame + 2 x 20 B gaps) x 8.
    min_quanta = -(-(max_frame + 64 + 40) * 8 * 2 // 512)
    if sc.pfc.quanta < min_quanta:
        warnings.append(f"pfc.quanta {sc.pfc.quanta} is below {min_quanta}: a pause lapses before its refresh "
                        f"can arrive behind a {max_frame} B frame, so senders resume while still above XOFF "
                        f"and lossless frames may be dropped (counted as headroom violations)")
    if sc.pfc.watchdog != "off":
        warnings.append(f"pfc.watchdog.action {sc.pfc.watchdog!r}: a queue the watchdog declares stormed "
                        f"{'drops its frames' if sc.pfc.watchdog == 'drop' else 'ignores pauses, so its peer may get more than its headroom holds'}"
                        f": lossless frames may be dropped (reason watchdog, or headroom)")
    if sc.pfc.headroom_bytes and np.any(sc.pfc.headroom_bytes < needed[sw_port]):
        warnings.append(f"pfc.headroom {_fmt_bytes(sc.pfc.headroom_bytes)} is below the "
                        f"{_fmt_bytes(needed[sw_port].max())} a port needs for what arrives after XOFF: "
                        f"lossless frames may be dropped (counted as headroom violations)")
    return warnings


def lossy_admission(sc, fabric, nodes) -> list[str]:
    """A dynamic threshold admits a lossy frame into an empty queue of an idle switch only
    when alpha x its shared pool covers the frame: below the largest frame of the scenario,
    such frames are dropped at every try, and a reliable transport retries until its limit.
    Returns a warning naming the first such switch's field, or nothing."""
    frame = max_frame_bytes(sc)
    low = np.nonzero((nodes["kind"] == SWITCH) & (nodes["threshold"] == THRESH["dynamic"])
                     & (nodes["alpha"] * nodes["shared_bytes"] < frame))[0]
    if not len(low):
        return []
    i = int(low[0])
    tier = fabric.tiers[i]
    where = f"switch.tiers.{tier}" if tier in dict(sc.switch.tiers) else "switch"
    room = int(nodes["alpha"][i] * nodes["shared_bytes"][i])
    return [f"{where}.alpha {float(nodes['alpha'][i]):g} x the shared pool of switch {fabric.names[i]} "
            f"({_fmt_bytes(int(nodes['shared_bytes'][i]))}) is {room} B, below the {frame} B of the largest frame "
            f"the scenario's transports may send at host.mtu {sc.host.mtu}: "
            f"a lossy frame that large is dropped even into an empty queue. Raise {where}.alpha or "
            f"{where}.buffer, or use {where}.threshold = \"static\""]


def cbfc_credits(sc, pt, nodes, max_frame):
    """CBFC credits (cells) per sending port: the receiver's room for one link. Default:
    enough to keep the link busy for a credit loop (twice the propagation, the receiver's
    latency, an update threshold's worth and the update frame) plus two maximum frames."""
    cell = sc.cbfc.cell
    if sc.cbfc.credits_bytes:
        return -(-sc.cbfc.credits_bytes // cell)
    rx_lat = nodes["latency_ps"][pt.node[pt.peer]]
    loop_ps = 2 * pt.delay_ps + rx_lat + ser_ps(2 * max_frame + 2 * (64 + 20), pt.rate_bps)
    room = bytes_on_wire(loop_ps, pt.rate_bps) + 2 * (max_frame + 20) + (sc.cbfc.update_bytes or max_frame)
    return -(-room // cell)


FILL_BLOCK_BYTES = 1 << 19      # what _fill_records writes at a time: within a core's L2


def _fill_records(dtype, n: int, template: dict, columns: dict) -> np.ndarray:
    """`n` zeroed records of `dtype` with each field of `template` set to its value and
    each field of `columns` to its array's element (`columns` win over `template`): the
    engine's flow and QP tables.
    NOTE: a QP record is 528 B, so assigning a field over the whole table is a pass over
    all of it (about 20 ms per field for a million QPs); block by block, the template's
    bytes are copied in and the varying fields written while the block is still in
    cache: 75 ms for the all-to-all's million QPs against 550 ms field by field."""
    one = np.zeros(1, dtype)
    for name, value in template.items():
        one[name] = value
    with _huge_pages(None):
        out = np.zeros(n, dtype)
    raw, one_raw = out.view(np.uint8).reshape(n, dtype.itemsize), one.view(np.uint8)
    rows = max(1, FILL_BLOCK_BYTES // dtype.itemsize)
    for a in range(0, n, rows):
        b = a + rows
        raw[a:b] = one_raw
        block = out[a:b]
        for name, values in columns.items():
            block[name] = values[a:b]
    return out


def build_qps(flows, sc, pt, host_node, nodes, qp_key, transport) -> np.ndarray:
    """QP endpoints: a send-only one per raw message, a requester/responder pair per RoCE
    or UET queue pair. Messages with the same (src, dst, transport, qp_key >= 0) share a
    QP, in posting order; the others get one each. flows["qp"] is the requester endpoint.
    `transport` per message: 0 raw, 1 RoCE, 2 UET (workloads' "transport" column).
    A UET endpoint owns one per-PSN slot (csrc/uet.pxd) per packet of its messages."""
    n = len(flows)
    roce_msg = flows["verb"] != V_RAW
    transport = np.asarray(transport, dtype=np.int32)
    if qp_key is None or np.all(qp_key < 0):     # every message its own QP
        g_first = group = np.arange(n)
    else:
        key = np.stack([flows["src"], flows["dst"], transport.astype(np.int64), qp_key,
                        np.where(qp_key >= 0, -1, np.arange(n))], axis=1)
        first, group = unique_rows(key)
        # number groups in order of their first message, so QP numbering follows the table
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        group = rank[group]
        g_first = np.sort(first)
    n_groups = len(g_first)
    roce = roce_msg[g_first]
    n_rsp = int(roce.sum())
    n_qps = n_groups + n_rsp
    req = np.arange(n_groups, dtype=np.int32)
    rsp = np.full(n_groups, -1, dtype=np.int32)
    rsp[roce] = n_groups + np.arange(n_rsp, dtype=np.int32)
    flows["qp"] = req[group]
    dt = _engine.QP_DTYPE
    # requesters first, in group order, then the responders of the RoCE/UET groups
    host = np.concatenate([flows["src"][g_first], flows["dst"][g_first][roce]]).astype(dt["host"])
    cols = {
        "host": host,
        "peer": np.concatenate([rsp, req[roce]]).astype(dt["peer"]),
        "transport": np.concatenate([transport[g_first], transport[g_first][roce]]).astype(dt["transport"]),
        "prio": np.concatenate([flows["prio"][g_first], flows["prio"][g_first][roce]]).astype(dt["prio"]),
    }
    line = pt.rate_bps[nodes["first_port"][host_node[host]]]
    cols["line_bps"] = cols["rate_bps"] = cols["target_bps"] = line
    template = {"port": -1, "next": -1, "msg_head": -1, "msg_tail": -1, "msg_cur": -1, "rsp_flow": -1,
                "mtu": sc.host.mtu, "alpha": 1.0, "rto_ps": rto_initial_ps(sc.roce), "last_cnp_ps": -(2**62)}
    uet = cols["transport"] == 2
    if uet.any():
        uet_cols = {f: np.zeros(n_qps, dtype=dt[f]) for f in ("uet_cwnd", "nscc_base_rtt", "nscc_maxwnd",
                                                             "nscc_cwnd_min")}
        cols["rto_ps"] = np.full(n_qps, template["rto_ps"], dtype=dt["rto_ps"])
        cols["rto_ps"][uet] = sc.uet.rto_ps
        uet_cols["uet_cwnd"][uet] = sc.uet.window_bytes or 2**62
        if sc.uet.nscc.enabled:
            # htsim UecSrc::initNscc: base RTT the network's, window ceiling and start 1.5 BDP
            rtt = nscc_params(sc)["nscc_rtt_ps"]
            maxwnd = (sc.uet.nscc.max_window * rtt * line[uet] / 8e12).astype(np.int64)
            maxwnd = np.maximum(maxwnd, sc.host.mtu)
            uet_cols["nscc_base_rtt"][uet] = rtt
            uet_cols["nscc_maxwnd"][uet] = maxwnd
            uet_cols["uet_cwnd"][uet] = maxwnd
            uet_cols["nscc_cwnd_min"][uet] = maxwnd
        cols.update(uet_cols)
        # per-PSN slots: a requester's messages' packets; its responder as many
        pkts = np.bincount(flows["qp"], weights=flows["npkts"], minlength=n_qps).astype(np.int64)
        pkts[rsp[roce]] = pkts[req[roce]]
        cap = np.where(uet, pkts, 0)
        cols["uet_cap"] = cap
        cols["uet_base"] = np.cumsum(cap) - cap
    return _fill_records(dt, n_qps, template, cols)


NSCC_REF_RATE_BPS = 100 * 10**9       # htsim initNsccParams: the reference network,
NSCC_REF_RTT_PS = 12_000_000           # 100 Gb/s and 12 us, that NSCC's constants are for
UET_ACK_FRAME_BYTES = 82               # csrc/uet.pxd UET_ACK_BYTES


def network_rtt_ps(sc: Scenario) -> int:
    """The unloaded RTT of the topology's longest host-to-host path: a full UET frame
    store-and-forwarded out and its ACK back, with every link's delay, every switch's
    latency and the receiving NICs' latency (NSCC's network base RTT)."""
    t = sc.topology
    hops = {"star": 2, "multiplane-star": 2, "leaf-spine": 4, "fat-tree": 6}.get(t.kind)
    if hops is None:                    # ring: to the far switch and off it
        hops = 2 + (t.switches - 1 if t.routing == "clockwise" else t.switches // 2)
    fabric = hops - 2
    up_rate = t.uplink_rate_bps or t.rate_bps
    delay = 2 * t.delay_ps + fabric * (t.fabric_delay_ps or t.delay_ps)
    latency = (hops - 1) * max([sc.switch.latency_ps] + [s.latency_ps for _, s in sc.switch.tiers]) \
        + sc.host.latency_ps
    one_way = 0
    for frame in (sc.host.mtu + UET_DATA_HEADER_BYTES, UET_ACK_FRAME_BYTES):
        wire = frame + PREAMBLE_BYTES + IFG_BYTES
        one_way += delay + latency + 2 * ser_ps(wire, t.rate_bps) + fabric * ser_ps(wire, up_rate)
    return int(one_way)


def nscc_params(sc: Scenario) -> dict:
    """NSCC's parameters for this network, as UEC's reference htsim scales them
    (UecSrc::initNsccParams): a = network BDP / reference BDP, b = target / 12 us;
    alpha = 4 a b MSS / target, fair increase 5 a, eta 0.15 MSS a, adjustment bytes
    16000 b, quick-adapt threshold 4 x target; [uet.nscc] values given override them."""
    n = sc.uet.nscc
    rtt = n.base_rtt_ps or network_rtt_ps(sc)
    bdp = rtt * sc.topology.rate_bps / 8e12
    a = bdp / (NSCC_REF_RTT_PS * NSCC_REF_RATE_BPS / 8e12)
    b = n.target_delay_ps / NSCC_REF_RTT_PS
    mss = sc.host.mtu
    return {
        "nscc_rtt_ps": int(rtt), "nscc_target_ps": n.target_delay_ps,
        "nscc_qa_ps": n.qa_threshold_ps or 4 * n.target_delay_ps, "nscc_fast_ps": 1_000_000,
        "nscc_period_ps": n.period_ps, "nscc_adjust_bytes": int(n.adjust_bytes or 16000 * b),
        "nscc_alpha": n.alpha or 4.0 * a * b * mss / n.target_delay_ps, "nscc_fi": n.fi or 5 * a,
        "nscc_eta": n.eta or 0.15 * mss * a, "nscc_gamma": n.gamma, "nscc_delay_alpha": n.delay_alpha,
        "nscc_maxwnd_bdp": n.max_window,
    }


def pfc_headroom_bytes(rate_bps, delay_ps, max_frame, response_ps, pipeline_ps):
    """Default PFC headroom per port (SONiC dynamically-headroom-calculation.md): what
    can still arrive after XOFF is sent: the pause frame's own serialization, a round
    trip of bytes on the cable, the peer's response time, the switch pipeline (frames
    already received but not yet admitted: ingress accounting happens after the pipeline
    latency in this model), and a maximum frame being sent at each end when the pause is
    generated and when it arrives, and the frame that found the port at XOFF."""
    return (bytes_on_wire(2 * np.asarray(delay_ps, dtype=np.int64), rate_bps) + bytes_on_wire(response_ps, rate_bps)
            + bytes_on_wire(pipeline_ps, rate_bps)
            + 3 * (max_frame + PREAMBLE_BYTES + IFG_BYTES) + 64 + PREAMBLE_BYTES + IFG_BYTES)


def _paths(src, dst, nodes, pt, host_node, routes):
    """Walk the first-choice shortest path from each host src[i] to dst[i] at once: per
    hop level, (egress port, -1 once arrived; whether the sending switch sprays)."""
    n = len(src)
    walking = np.arange(n)              # the flows not yet arrived, and their columns:
    cur = host_node[src].astype(np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    dst_node = host_node[dst].astype(np.int64)
    # a switch spraying over several next hops: frames do not queue behind each other
    sprays = (nodes["kind"] == SWITCH) & (nodes["ecmp"] == ECMP["spray"])
    never = None if sprays.any() else np.zeros(n, dtype=bool)    # shared by every level
    levels = []
    while len(walking):
        first, choices = _next_hops_once(routes, pt, host_node, cur, dst)
        if len(walking) == n:
            port = first
        else:
            port = np.full(n, -1, dtype=np.int64)
            port[walking] = first
        if never is None:
            spray = np.zeros(n, dtype=bool)
            spray[walking] = sprays[cur] & (choices > 1)
        else:
            spray = never
        levels.append((port, spray))
        cur = pt.node[pt.peer[first]].astype(np.int64)
        on = cur != dst_node
        if not on.all():
            walking, cur, dst, dst_node = walking[on], cur[on], dst[on], dst_node[on]
    return levels


def _next_hops_once(routes, pt, host_node, cur, dst):
    """routes.next_hops for each (node, destination host) pair, computed once per distinct
    pair. NOTE: past their first hop a million flows of a 1024-host fat-tree are at most
    a few hundred switches x 1024 hosts distinct pairs; numbering the pairs (a lookup
    table, no sort) and gathering back costs less than a third of next_hops' passes."""
    n_hosts = len(host_node)
    bound = len(pt.first) * n_hosts
    if bound > 4 * len(cur) + 4096:     # numbering would need a sort
        return routes.next_hops(pt, host_node, cur, dst)
    ids, m = _relabel(cur * n_hosts + dst, bound)
    if 2 * m > len(cur):
        return routes.next_hops(pt, host_node, cur, dst)
    one = np.empty(m, dtype=np.int64)
    one[ids] = np.arange(len(cur))
    first, count = routes.next_hops(pt, host_node, cur[one], dst[one])
    return first[ids], count[ids]


def _relabel(values: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
    """Dense ids 0..m-1 for integer values in [0, bound): (ids, m). NOTE: a lookup table
    instead of a sort when the bound is small (path ids grow one hop at a time)."""
    if bound <= 4 * len(values) + 4096:
        seen = np.zeros(bound, dtype=bool)
        seen[values] = True
        ids = np.cumsum(seen) - 1
        return ids[values], int(seen.sum())
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.reshape(-1), len(uniq)


def _path_ids(levels, hop_type: np.ndarray, n_types: int) -> np.ndarray:
    """One id per flow for its sequence of hop types (levels of _paths), equal ids for
    equal sequences: built level by level as (id so far, this hop's type)."""
    pid = np.zeros(len(levels[0][0]) if levels else 0, dtype=np.int64)
    n_ids, width = 1, 2 * n_types + 1
    for port, spray in levels:
        t = np.where(port >= 0, 1 + 2 * hop_type[np.maximum(port, 0)] + spray, 0)
        pid, n_ids = _relabel(pid * width + t, n_ids * width)
    return pid


def _hops(levels, i, hop_params) -> list[tuple]:
    """Flow i's path as _pipeline takes it: (rate, delay, latency, cut-through, spray) per hop."""
    return [(*hop_params[int(port[i])], int(spray[i])) for port, spray in levels if port[i] >= 0]


ROCE_BASE_BYTES, RETH, AETH, IMM = 66, 16, 4, 4     # csrc/roce.pxd
V_RAW, V_WRITE, V_SEND, V_READ, V_WRITE_IMM, V_SEND_IMM = range(6)


def _payloads(size: int, mtu: int) -> np.ndarray:
    """Payload bytes of each packet of a `size`-byte message cut at `mtu`."""
    n_full, last = divmod(size, mtu)
    payload = np.full(n_full + (1 if last else 0), mtu, dtype=np.int64)
    if last:
        payload[-1] = last
    return payload


def frame_sizes(verb: int, size: int, mtu: int) -> np.ndarray:
    """Frame bytes (FCS included) of a message's data frames, as the engine builds them."""
    payload = _payloads(size, mtu)
    if verb == V_RAW:
        return raw_frame_bytes(payload)
    ext = np.zeros(len(payload), dtype=np.int64)
    if verb in (V_WRITE, V_WRITE_IMM):
        ext[0] += RETH
    if verb in (V_WRITE_IMM, V_SEND_IMM):
        ext[-1] += IMM
    if verb == V_READ:                  # READ RESPONSE FIRST/LAST/ONLY carry AETH
        ext[0] = AETH
        ext[-1] = AETH
    pad = (4 - (payload & 3)) & 3           # BTH PadCnt (IBA 9.2)
    return np.maximum(ROCE_BASE_BYTES + ext + payload + pad, MIN_FRAME_BYTES)


READ_REQUEST_BYTES = ROCE_BASE_BYTES + RETH
TRANSPORT_UET = TRANSPORT_CODES["uet"]      # build_qps transport codes (workloads.TRANSPORT_CODES)


def uet_frame_sizes(size: int, mtu: int) -> np.ndarray:
    """Frame bytes (FCS included) of a UET message's data frames (csrc/uet.pxd): PDS RUD
    request and SES standard headers on every packet, no padding."""
    return np.maximum(UET_DATA_HEADER_BYTES + _payloads(size, mtu), MIN_FRAME_BYTES)


def unique_rows(rows: np.ndarray):
    """(index of each distinct row's first occurrence, inverse) for an array of fixed-size
    records. NOTE: hashes each record to 64 bits and sorts the hashes (np.unique on a
    structured array sorts field by field: 40 s for a million flows); the records are
    then compared exactly, and any hash collision falls back to the exact method."""
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), -1)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((len(rows), pad), dtype=np.uint8)], axis=1)
    words = raw.view(np.uint64)
    h = np.full(len(rows), 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = (h ^ words[:, j]) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(raw, raw[first[inverse]]):
        _, first, inverse = np.unique(raw, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return first, inverse


def _groups(columns) -> tuple[np.ndarray, np.ndarray]:
    """(one member of each group, each row's group) for rows equal in every one of the
    integer `columns`; groups in no particular order, and any member may stand for its
    group. NOTE: where the columns' ranges multiply to below 2^62, each row is one int64
    (mixed radix) and _relabel numbers them, with no sort when the values are few: the
    million-flow all-to-all's key (size, MTU, verb, lanes, two path ids, transport; all
    but one constant) in 55 ms against 190 ms through unique_rows (stack, hash, sort)."""
    n = len(columns[0])
    combined, bound = np.zeros(n, dtype=np.int64), 1
    for c in columns if n else ():
        lo, hi = int(c.min()), int(c.max())
        if hi == lo:
            continue
        if bound * (hi - lo + 1) >= 2**62:
            return unique_rows(np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1))
        combined *= hi - lo + 1
        combined += np.asarray(c, dtype=np.int64) - lo
        bound *= hi - lo + 1
    ids, m = _relabel(combined, bound)
    member = np.empty(m, dtype=np.int64)
    member[ids] = np.arange(n)
    return member, ids


def _hop_types(nodes, pt) -> tuple[int, np.ndarray, list[tuple[int, ...]]]:
    """A hop's type: its link's rate and delay, the receiving node's latency and
    cut-through. Returns the number of types, each port's type id, and each port's
    parameters as a tuple (what _pipeline reads)."""
    peer = pt.node[pt.peer]
    params = np.stack([pt.rate_bps, pt.delay_ps, nodes["latency_ps"][peer], nodes["cut_through"][peer]],
                      axis=1).astype(np.int64)
    types, port_type = np.unique(params, axis=0, return_inverse=True)
    return len(types), port_type.reshape(-1), list(map(tuple, params.tolist()))     # Python ints


def ideal_fct_ps(flows, sc, nodes, pt, host_node, routes, transport) -> np.ndarray:
    """Ideal completion per message (see module doc). A READ's data flows back from the
    responder: its ideal is the request's one-way time plus the responses' pipeline.
    `transport` (per message: 0 raw, 1 RoCE, 2 UET, workloads' "transport" column) picks the
    frames: UET data frames carry their PDS and SES headers, only RoCE data frames HPCC's INT.

    NOTE: messages are grouped by what their ideal depends on (size, MTU, verb, lanes and
    the hop types of each path, as small integer ids), and _pipeline runs once per group."""
    n = len(flows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    n_types, port_type, hop_params = _hop_types(nodes, pt)
    src, dst = flows["src"].astype(np.int64), flows["dst"].astype(np.int64)
    fwd = _paths(src, dst, nodes, pt, host_node, routes)
    is_read = flows["verb"] == V_READ
    reads = np.nonzero(is_read)[0]
    rev = _paths(dst[reads], src[reads], nodes, pt, host_node, routes) if len(reads) else []
    rev_id = np.zeros(n, dtype=np.int64)
    if len(reads):
        rev_id[reads] = 1 + _path_ids(rev, port_type, n_types)
    # A host that sprays over P equal-cost ports sends frame i on port i mod P.
    sender = np.where(is_read, dst, src)
    receiver = np.where(is_read, src, dst)
    lanes = np.ones(n, dtype=np.int64)
    transport = np.asarray(transport, dtype=np.int64)
    host_spray = nodes["ecmp"][host_node[sender]] == ECMP["spray"]
    spr = np.nonzero(host_spray | ((transport == TRANSPORT_UET) & sc.uet.spray))[0]
    if len(spr):
        lanes[spr] = routes.next_hops(pt, host_node, host_node[sender[spr]], receiver[spr])[1]
    first, inverse = _groups([flows["size"], flows["mtu"], flows["verb"], lanes,
                              _path_ids(fwd, port_type, n_types), rev_id, transport])
    read_pos = np.full(n, -1, dtype=np.int64)
    read_pos[reads] = np.arange(len(reads))
    out = np.empty(len(first), dtype=np.int64)
    for j, i in enumerate(first.tolist()):
        verb, size, mtu, ln = int(flows["verb"][i]), int(flows["size"][i]), int(flows["mtu"][i]), int(lanes[i])
        uet = transport[i] == TRANSPORT_UET
        frames = uet_frame_sizes(size, mtu) if uet else frame_sizes(verb, size, mtu)
        path = _hops(fwd, i, hop_params)
        if verb == V_READ:
            back = _hops(rev, int(read_pos[i]), hop_params)
            out[j] = (_pipeline(np.array([READ_REQUEST_BYTES]), path)
                      + max(_pipeline(frames[k::ln], back) for k in range(min(ln, len(frames)))))
        else:
            # HPCC: an INT header from the NIC, a 16 B record more after each switch
            hp = sc.hpcc.enabled and not uet and verb != V_RAW
            frames = frames + (INT_BASE_BYTES if hp else 0)
            grow = INT_HOP_BYTES if hp else 0
            out[j] = max(_pipeline(frames[k::ln], path, grow) for k in range(min(ln, len(frames))))
    return out[inverse]


INT_BASE_BYTES, INT_HOP_BYTES, INT_MAX_HOPS = 4, 16, 5    # csrc/hpcc.pxd, core.pxd
HPCC_NO_ROCE_RTT_PS = 1_000_000         # T when no RoCE message runs (HPCC then has nothing to pace)


def hpcc_base_rtt_ps(flows, sc, nodes, pt, host_node, routes, transport) -> int:
    """HPCC's base RTT T (hpcc.base_rtt 0): the longest, over the RoCE messages' first-choice
    paths, of a full data frame's way into an empty fabric (RETH, INT header and one record
    per switch included) plus its ACK's way back (echoing the records), each hop's
    serialization, propagation and the receiving node's latency (_pipeline). HPCC's ns-3
    model computes its base RTT from the path the same way (propagation and transmission
    of a data packet and its ACK)."""
    roce = np.nonzero(np.asarray(transport) == TRANSPORT_CODES["roce"])[0]   # not UET's
    if not len(roce):
        return HPCC_NO_ROCE_RTT_PS
    pairs = np.unique(np.stack([flows["src"][roce], flows["dst"][roce]], axis=1).astype(np.int64), axis=0)
    src, dst = pairs[:, 0], pairs[:, 1]
    n_types, port_type, hop_params = _hop_types(nodes, pt)
    fwd = _paths(src, dst, nodes, pt, host_node, routes)
    rev = _paths(dst, src, nodes, pt, host_node, routes)
    key = np.stack([_path_ids(fwd, port_type, n_types), _path_ids(rev, port_type, n_types)], axis=1)
    first, _ = unique_rows(key)
    best = 0
    for i in first.tolist():
        there, back = _hops(fwd, i, hop_params), _hops(rev, i, hop_params)
        data = ROCE_BASE_BYTES + RETH + sc.host.mtu + INT_BASE_BYTES      # grows at each switch
        ack = ROCE_BASE_BYTES + AETH + INT_BASE_BYTES + INT_HOP_BYTES * min(len(there) - 1, INT_MAX_HOPS)
        best = max(best, _pipeline(np.array([data]), there, INT_HOP_BYTES) + _pipeline(np.array([ack]), back))
    return best


def _pipeline(frame0, path, grow: int = 0) -> int:
    """Arrival of the last frame at the end of `path` for frames sent back to back into an
    empty fabric (exact on a single path; see module doc). A hop where a switch sprays
    frames over several equal-cost links is taken as uncontended (each frame its own link:
    the best case), and the next hop serves frames in the order they arrive. `grow`: bytes
    a frame gains at each switch it leaves (HPCC's INT records, at most INT_MAX_HOPS)."""
    frame0 = np.asarray(frame0, dtype=np.int64)
    avail = np.zeros(len(frame0), dtype=np.int64)
    for j, (rate, delay, lat, ct, spray) in enumerate(path):
        order = np.argsort(avail, kind="stable")
        frame0, avail = frame0[order], avail[order]
        frame = frame0 + grow * min(j, INT_MAX_HOPS)
        wire = ser_ps(frame + PREAMBLE_BYTES + IFG_BYTES, rate)
        if spray:
            start = avail
        else:
            w_before = np.concatenate(([0], np.cumsum(wire)[:-1]))
            # start(i) = max(avail(i), start(i-1) + wire(i-1)) as a running maximum
            start = w_before + np.maximum.accumulate(avail - w_before)
        last_bit = start + ser_ps(frame + PREAMBLE_BYTES, rate) + delay
        avail = last_bit + lat
        nxt_rate = path[j + 1][0] if j + 1 < len(path) else None
        if ct and nxt_rate is not None and nxt_rate <= rate:
            head = start + ser_ps(PREAMBLE_BYTES + CT_HEADER_BYTES, rate) + delay + lat
            avail = np.where(frame > CT_HEADER_BYTES, head, avail)
    return int(avail.max())


class Result:
    """What a run produced: `summary` (the aggregates written to summary.json), the
    per-flow, per-QP and per-port results as Arrow tables (`table(name)`,
    `flows_table()`...; pandas with `flows_df()`...; Parquet with `write_tables`), and
    the engine's own records as numpy structured arrays (`flows`, `qps`, `ports`,
    `queues`, `nodes`)."""

    def __init__(self, sim: "Simulation", wall_s: float, stop: str):
        eng, comp = sim.engine, sim.compiled
        self.scenario = sim.scenario
        self.flows, self.ports, self.queues, self.nodes = eng.flows, eng.ports, eng.queues, eng.nodes
        self.qps = eng.qps
        self.ls_ops = eng.ls_ops[: len(sim.compiled.ls_ops)]
        self.rate_samples = eng.rate_samples()
        self.ideal_fct_ps = comp.ideal_fct_ps
        c = eng.counters()
        self.counters = c
        self.stop = stop
        fl = self.flows
        done = fl["finish_ps"] >= 0
        fct = np.where(done, fl["finish_ps"] - fl["start_ps"], -1)
        self.fct_ps = fct
        self.slowdown = np.where(done, fct / np.maximum(comp.ideal_fct_ps, 1), np.nan)
        drops = {DROP_REASONS[i]: int(v) for i, v in enumerate(c["drops_by_reason"]) if v}
        names = comp.fabric.names
        sim_s = c["sim_time_ps"] / PS
        self.summary = {
            "scenario": sim.scenario.name,
            "seed": sim.scenario.seed,
            "ethlink_version": _version(),
            "stop": stop,
            "events": c["events"],
            "sim_time_ps": c["sim_time_ps"],
            "wall_s": wall_s,
            "events_per_s": c["events"] / wall_s if wall_s > 0 else None,
            "bytes_sent": c["bytes_sent"],
            "bytes_delivered": c["bytes_delivered"],
            "bytes_dropped": c["bytes_dropped"],
            "packets_sent": c["packets_sent"],
            "packets_delivered": c["packets_delivered"],
            "packets_dropped": c["packets_dropped"],
            "packets_in_flight": c["packets_in_flight"],
            "packet_hops": c["packet_hops"],
            "drops": drops,
            "pfc_pause_frames": int(self.ports["pause_tx"].sum()),
            "pfc_pause_frames_received": int(self.ports["pause_rx"].sum()),
            "paused_time_ps": int(self._paused_ps().sum()),
            "ecn_marked": c["ecn_marked"],
            "cnps": c["cnps"],
            "naks": c["naks"],
            "retransmitted_packets": c["retransmitted_packets"],
            "timeouts": c["timeouts"],
            "spurious_retransmissions": c["spurious_retransmissions"],
            "conservation": _conservation(c, eng.data_in_flight(), bool((self.qps["transport"] == 2).any())),
            "uet": _uet_summary(c, self.qps, sim.scenario),
            "qp_errors": c["qp_errors"],
            "packets_discarded": c["packets_discarded"],
            "deadlock_detected": c["deadlock_ps"] >= 0,
            "deadlock_time_ps": c["deadlock_ps"] if c["deadlock_ps"] >= 0 else None,
            "deadlock_cycle": self._cycle(names, comp.port_table, eng.deadlock_cycle()),
            "lossless_drops": c["lossless_drops"],
            "headroom_violations": int(c["drops_by_reason"][DROP_REASONS.index("headroom")]),
            "warnings": list(comp.warnings) + _run_warnings(
                c, sim.scenario, int(self.qps["timeouts"][self.qps["transport"] == 2].sum())),
            "watchdog_storms": c["watchdog_storms"],
            "ls": loadstore.summarize(self.ls_ops, eng.ls_gpus, c, c["sim_time_ps"]),
            "llr_replays": c["llr_replays"],
            "fcs_errors": int(self.ports["fcs_errors"].sum()),
            "fcs_drops": c["fcs_drops"],
            "cbfc_updates": c["cbfc_updates"],
            "hpcc": self._hpcc(sim.hpcc, c),
            "credits_stalled_ps": int(self.queues["stalled_ps"].sum()),
            "flows_total": int(len(fl)),
            "flows_completed": int(done.sum()),
            "fct_ps": _stats(fct[done]),
            "slowdown": _stats(self.slowdown[done]),
            "goodput_bps": (c["bytes_delivered"] * 8 / sim_s) if sim_s > 0 else 0.0,
            "buffer_hwm_bytes": {names[i]: int(v) for i, v in enumerate(self.nodes["buffer_hwm"])
                                 if self.nodes["kind"][i] == SWITCH},
            "headroom_hwm_bytes": {names[i]: int(v) for i, v in enumerate(self.nodes["hdrm_hwm"])
                                   if self.nodes["kind"][i] == SWITCH},
        }
        self._names, self._port_table, self._sim_s = names, sim.compiled.port_table, sim_s
        self._tables: dict = {}

    # Per-flow, per-QP and per-port results: Arrow tables (ethlink.tables), Parquet files.
    def table(self, name: str) -> "pyarrow.Table":
        """The run's `flows`, `qps` or `ports` rows as an Arrow table (built once); the
        columns are docs/results.md's flows.parquet, qps.parquet and ports.parquet."""
        if name not in self._tables:
            from . import tables
            if name == "flows":
                self._tables[name] = tables.table(self._flows(), nulls=FLOW_NULLABLE)
            elif name == "qps":
                self._tables[name] = tables.rows_table(self._qps(), keys=("qp", "host", "peer"))
            elif name == "ports":
                cols = self._ports(self._names, self._port_table, self._sim_s)
                self._tables[name] = (tables.table(cols) if len(cols["port"]) else
                                      tables.rows_table([], keys=("port", "node", "peer")))
            else:
                raise ValueError(f"table {name!r}: choose one of {', '.join(tables.TABLE_NAMES)}")
        return self._tables[name]

    def to_arrow(self, name: str = "flows") -> "pyarrow.Table":
        """The `flows`, `qps` or `ports` table as a pyarrow.Table (same as `table(name)`):
        for DuckDB (`duckdb.sql("select ... from t")`), Polars (`polars.from_arrow`) or
        Parquet."""
        return self.table(name)

    def to_pandas(self, name: str = "flows") -> "pandas.DataFrame":
        """The `flows`, `qps` or `ports` table as a pandas DataFrame (imports pandas)."""
        return self.table(name).to_pandas()

    def flows_table(self) -> "pyarrow.Table":
        """Per flow (message), as an Arrow table."""
        return self.table("flows")

    def qps_table(self) -> "pyarrow.Table":
        """Per active RoCE or UET QP endpoint, as an Arrow table."""
        return self.table("qps")

    def ports_table(self) -> "pyarrow.Table":
        """Per port that sent or dropped a frame, as an Arrow table."""
        return self.table("ports")

    def flows_df(self) -> "pandas.DataFrame":
        """flows_table() as a pandas DataFrame (imports pandas)."""
        return self.to_pandas("flows")

    def qps_df(self) -> "pandas.DataFrame":
        """qps_table() as a pandas DataFrame (imports pandas)."""
        return self.to_pandas("qps")

    def ports_df(self) -> "pandas.DataFrame":
        """ports_table() as a pandas DataFrame (imports pandas)."""
        return self.to_pandas("ports")

    def __repr__(self) -> str:
        """A run at a glance (what a notebook shows for a Result)."""
        from .units import fmt_time
        s = self.summary
        lines = [f"<ethlink.Result {s['scenario']!r} seed {s['seed']}: stop={s['stop']}, "
                 f"simulated {fmt_time(s['sim_time_ps'])}, {s['events']:,} events>",
                 f"  flows      {s['flows_completed']:,} / {s['flows_total']:,} completed"]
        if s["fct_ps"]:
            f, sd = s["fct_ps"], s["slowdown"]
            lines[-1] += (f"; FCT p50 {fmt_time(int(f['p50']))}, p99 {fmt_time(int(f['p99']))}, "
                          f"max {fmt_time(int(f['max']))}; slowdown p99 {sd['p99']:.2f}")
        drops = ", ".join(f"{k} {v:,}" for k, v in s["drops"].items()) or "none"
        lines.append(f"  drops      {drops}; lossless drops {s['lossless_drops']:,}")
        lines.append(f"  PFC        {s['pfc_pause_frames']:,} pause frames, paused {fmt_time(s['paused_time_ps'])}"
                     f"{'; DEADLOCK' if s['deadlock_detected'] else ''}")
        if s["retransmitted_packets"] or s["timeouts"] or s["cnps"] or s["ecn_marked"]:
            lines.append(f"  RoCE       {s['retransmitted_packets']:,} retransmitted ({s['spurious_retransmissions']:,} "
                         f"spurious), {s['timeouts']:,} timeouts, {s['ecn_marked']:,} ECN marks, {s['cnps']:,} CNPs")
        hp = s.get("hpcc")
        if hp:
            lines.append(f"  HPCC       T {fmt_time(hp['base_rtt_ps'])}, W_init {hp['w_init_bytes']:,} B, "
                         f"{hp['int_records']:,} INT records, {hp['window_updates']:,} window updates")
        ls = s["ls"]
        if ls:
            lat = (f", latency p50 {fmt_time(ls['p50_ps'])}, p99 {fmt_time(ls['p99_ps'])}" if "p50_ps" in ls else "")
            lines.append(f"  Load/Store {ls['count']:,} of {ls['total']:,} ops completed{lat}")
        for w in s["warnings"]:
            lines.append(f"  warning    {w}")
        lines.append("  tables     to_arrow(name) / to_pandas(name), name in flows, qps, ports")
        return "\n".join(lines)

    def write_tables(self, outdir: "str | os.PathLike[str]", on_table: Callable[[str], None] | None = None) -> list:
        """Write OUTDIR/flows.parquet, qps.parquet and ports.parquet, each atomically;
        `on_table(name)` is called before each. Returns the paths."""
        from pathlib import Path
        from . import tables
        paths = []
        for name in tables.TABLE_NAMES:
            if on_table is not None:
                on_table(name)
            path = Path(outdir) / f"{name}.parquet"
            tables.write_parquet_atomic(path, self.table(name))
            paths.append(path)
        return paths

    @staticmethod
    def _cycle(names, pt, queues):
        """The deadlock cycle as egress queues: each waits for the next, the last for the first."""
        return [{"node": names[pt.node[q // 8]], "port": int(q // 8), "peer": names[pt.node[pt.peer[q // 8]]],
                 "prio": int(q % 8)} for q in queues]

    def _paused_ps(self):
        """Paused time per queue (port x 8 priorities), open pauses closed at now."""
        q = self.queues
        now = self.counters["sim_time_ps"]
        open_ = np.where(q["pause_start"] >= 0, np.minimum(q["paused_until"], now) - q["pause_start"], 0)
        return (q["paused_ps"] + np.maximum(open_, 0)).reshape(-1, 8)

    def _ports(self, names, pt, sim_s):
        """Per port that sent or dropped a frame, its columns: numpy arrays (a 2-D one,
        per priority, is a list column) and node names.

        NOTE: columns taken from the engine's arrays at once, not built row by row (a
        k=8 fat-tree has about 500 such ports: 4 ms of the 127:1 incast's write)."""
        q = self.queues.reshape(-1, 8)
        ports = self.ports
        sel = np.nonzero(ports["tx_frames"] | q["drops"].sum(axis=1))[0]
        node = pt.node[sel]
        return {
            "port": sel, "node": [names[n] for n in node.tolist()],
            "peer": [names[n] for n in pt.node[pt.peer[sel]].tolist()],
            "tx_bytes": ports["tx_bytes"][sel], "tx_frames": ports["tx_frames"][sel],
            "utilization": (ports["busy_ps"][sel] / (sim_s * PS)) if sim_s > 0 else np.zeros(len(sel)),
            "queue_hwm_bytes": q["hwm"][sel],
            "drops": q["drops"][sel].sum(axis=1),
            "pause_tx": ports["pause_tx"][sel],
            "pause_rx": ports["pause_rx"][sel],
            "xoff_sent": q["pauses_sent"][sel],          # per priority, refreshes included
            "credits_stalled_ps": q["stalled_ps"][sel],
            "llr_replays": ports["llr_replays"][sel],
            "fcs_errors": ports["fcs_errors"][sel],
            "paused_ps": self._paused_ps()[sel],
            "ecn_marks": q["marks"][sel],
        }

    def _hpcc(self, params: dict | None, c: dict) -> dict | None:
        """HPCC aggregates (None when hpcc is off): its constants, the INT records and
        bytes, and the senders' windows."""
        if params is None:
            return None
        q = self.qps
        upd = q["hp_updates"] > 0
        return {**params, "eta": self.scenario.hpcc.eta, "max_stage": self.scenario.hpcc.max_stage,
                "int_records": c["hpcc_int_records"], "int_bytes": c["hpcc_int_bytes"],
                "window_updates": int(q["hp_updates"].sum()),
                "window_min_bytes": int(q["hp_w_min"][upd].min()) if upd.any() else None,
                "window_final_bytes": _stats(q["hp_w"][upd]) if upd.any() else None}

    def _qps(self):
        """Per RoCE or UET QP endpoint that did anything: retransmissions, timeouts, CNPs,
        its DCQCN rate (lowest and last), and for UET the NACKs and SACKs it received."""
        q = self.qps
        active = (q["transport"] >= 1) & ((q["psn_end"] > 0) | (q["cnps_tx"] > 0) | (q["acks_rx"] > 0))
        samples = self.rate_samples
        # NOTE: samples grouped by QP once (stable: time order kept), not filtered per QP.
        by_qp = samples[np.argsort(samples[:, 1], kind="stable")] if len(samples) else samples
        bounds = np.searchsorted(by_qp[:, 1], np.arange(len(q) + 1)) if len(samples) else np.zeros(len(q) + 1, int)
        out = []
        for i in np.nonzero(active)[0]:
            mine = by_qp[bounds[i]:bounds[i + 1]]
            out.append({
                "qp": int(i), "host": int(q["host"][i]), "peer": int(q["peer"][i]),
                "retransmitted_packets": int(q["retx_pkts"][i]), "timeouts": int(q["timeouts"][i]),
                # copies it sent of PSNs its peer had already accepted
                "spurious_retransmissions": int(q["spurious"][q["peer"][i]]) if q["peer"][i] >= 0 else 0,
                "naks_received": int(q["naks_rx"][i]), "cnps_received": int(q["cnps_rx"][i]),
                "cnps_sent": int(q["cnps_tx"][i]),
                "transport": TRANSPORTS[int(q["transport"][i])],
                "uet_nacks_received": int(q["uet_nacks_rx"][i]), "uet_sacks_received": int(q["uet_sacks_rx"][i]),
                # NSCC window (UET senders with uet.nscc; 0 otherwise)
                "nscc_cwnd_bytes": int(q["uet_cwnd"][i]) if q["nscc_maxwnd"][i] else 0,
                "nscc_cwnd_min_bytes": int(q["nscc_cwnd_min"][i]) if q["nscc_maxwnd"][i] else 0,
                "nscc_quick_adapts": int(q["nscc_qas"][i]), "nscc_decreases": int(q["nscc_mds"][i]),
                "rate_min_bps": int(mine[:, 2].min()) if len(mine) else int(q["line_bps"][i]),
                "rate_final_bps": int(q["rate_bps"][i]), "rate_samples": int(len(mine)),
                # every DCQCN (or HPCC) rate change, as two parallel lists
                "rate_series_ps": mine[:, 0].tolist(), "rate_series_bps": mine[:, 2].tolist(),
                # HPCC (0 without it): window at the end, smallest window, ACKs that updated it
                "hpcc_window_bytes": int(q["hp_w"][i]), "hpcc_window_min_bytes": int(q["hp_w_min"][i]),
                "hpcc_updates": int(q["hp_updates"][i]),
            })
        return out

    def _flows(self):
        """Per-flow columns (numpy), for flows_table(); -1 in FLOW_NULLABLE columns is null."""
        from .tables import categorical
        fl = self.flows
        return {
            "id": np.arange(len(fl)), "src": fl["src"], "dst": fl["dst"], "bytes": fl["size"],
            "verb": categorical(fl["verb"], VERB_NAMES), "start_ps": fl["start_ps"],
            "finish_ps": fl["finish_ps"], "complete_ps": fl["complete_ps"], "fct_ps": self.fct_ps,
            "ideal_fct_ps": self.ideal_fct_ps, "slowdown": self.slowdown, "retransmitted_packets": fl["retx"],
        }


FLOW_NULLABLE = ("finish_ps", "complete_ps", "fct_ps")


def _conservation(c: dict, in_flight: tuple[int, int], uet: bool = False) -> dict:
    """Where every payload byte of flow data (raw, RoCE data, READ responses; not
    Load/Store) went: first transmissions + retransmitted copies = delivered (accepted by
    the receiver, each byte once) + discarded by the transport receiver (out of order,
    duplicate) + dropped in the fabric + trimmed (UET: the payload a switch cut off; the
    trimmed header travels on without payload, and a drop of it adds nothing) + still
    queued or on a wire. `residual` is the
    left side minus the right: 0 at the end of every run."""
    out = {"first_tx_bytes": c["bytes_sent"], "retransmitted_bytes": c["bytes_retransmitted"],
           "delivered_bytes": c["bytes_delivered"], "discarded_bytes": c["bytes_discarded"],
           "dropped_bytes": c["bytes_dropped_flow"], "in_flight_bytes": in_flight[1]}
    if uet:                             # the key exists in runs with UET queue pairs
        out["trimmed_bytes"] = c["uet_trimmed_bytes"]
    out["residual"] = (out["first_tx_bytes"] + out["retransmitted_bytes"] - out["delivered_bytes"]
                       - out["discarded_bytes"] - out["dropped_bytes"] - out.get("trimmed_bytes", 0)
                       - out["in_flight_bytes"])
    return out


def _uet_summary(c: dict, qps, sc: Scenario) -> dict:
    """UET counters (csrc/uet.pxd), and NSCC's when it is on: empty when the run has no
    UET queue pair."""
    uet = qps["transport"] == 2
    if not uet.any():
        return {}
    out = {"qps": int(uet.sum() // 2), "trimmed_packets": c["uet_trimmed"], "trimmed_bytes": c["uet_trimmed_bytes"],
           "nacks": c["uet_nacks"], "acks": c["uet_acks"], "sacks": c["uet_sacks"],
           "selective_retransmissions": c["uet_selective_retransmissions"],
           "timeouts": int(qps["timeouts"][uet].sum())}
    if sc.uet.nscc.enabled:
        senders = uet & (qps["psn_end"] > 0)
        p = nscc_params(sc)
        out["nscc"] = {"quick_adapts": c["nscc_quick_adapts"], "decreases": c["nscc_decreases"],
                       "base_rtt_ps": p["nscc_rtt_ps"], "target_delay_ps": p["nscc_target_ps"],
                       "cwnd_min_bytes": int(qps["nscc_cwnd_min"][senders].min()) if senders.any() else 0,
                       "cwnd_final_bytes_mean": float(qps["uet_cwnd"][senders].mean()) if senders.any() else 0.0}
    return out


def _run_warnings(c: dict, sc: Scenario, uet_timeouts: int = 0) -> list[str]:
    """What the run itself shows is probably misconfigured."""
    out = []
    roce_timeouts = c["timeouts"] - uet_timeouts
    if roce_timeouts and not c["packets_dropped"] and c["deadlock_ps"] < 0:
        timer = f"roce.rto {sc.roce.rto_ps} ps" if sc.roce.rto_ps else f"roce.timeout {sc.roce.timeout}"
        out.append(f"{roce_timeouts} RoCE retransmission timeouts without a single drop: the timer ({timer}) is "
                   f"shorter than the queueing delay, and {c['spurious_retransmissions']} retransmitted packets "
                   f"arrived as duplicates (spurious_retransmissions); raise roce.timeout")
    if uet_timeouts and not c["packets_dropped"] and c["deadlock_ps"] < 0:
        out.append(f"{uet_timeouts} UET retransmission timeouts without a single drop: uet.rto ({sc.uet.rto_ps} ps) "
                   f"is shorter than the queueing delay, and packets that were only queued were sent again; "
                   f"raise uet.rto")
    if c["qp_errors"]:
        if c["lossless_drops"]:
            fix = (f"a PFC configuration that holds: the lossless class itself dropped {c['lossless_drops']} frames "
                   f"(lossless_drops; see the pfc warnings)")
        elif "uet" not in _transports(sc.flows, sc.workloads):
            fix = "a lossless class (pfc.priorities) or congestion control ([dcqcn] or [hpcc])"
        elif not c["packets_dropped"]:
            # nothing was lost: NACKs of trimmed packets counted toward the limit while a
            # deep queue held back the ACKs that reset it
            fix = ("a higher uet.retry_limit: nothing was dropped, but the NACKs of trimmed packets count toward "
                   "it and the deep queue delayed the ACKs that reset it")
        else:
            fix = ("congestion control (uet.nscc.enabled) or a smaller uet.window, so that senders stop overrunning "
                   "the buffer (a trimmed header needs room too)")
        out.append(f"{c['qp_errors']} queue pairs gave up (qp_errors) after their retry limit (roce.retry_limit, "
                   f"uet.retry_limit): the fabric dropped or trimmed every copy they sent again, and their "
                   f"messages are incomplete (flows_completed). Use {fix}")
    return out


def _stats(x):
    if len(x) == 0:
        return None
    x = np.asarray(x, dtype=np.float64)
    s = np.sort(x)
    return {"count": int(len(x)), "mean": float(x.mean()), "p50": _percentile(s, 50),
            "p99": _percentile(s, 99), "max": float(x.max()), "min": float(x.min())}


def _percentile(s: np.ndarray, q: int) -> float:
    """np.percentile(s, q) of sorted float64 values (its default method, "linear"), the
    same double: the virtual index (n - 1) * (q / 100) and numpy's _lerp, which
    interpolates from the upper neighbour when the weight is 0.5 or more; NaN when the
    values hold one (it sorts last).

    NOTE: not np.percentile itself: numpy 2.x's calls np.unique, which imports numpy.ma
    (11 ms) on every `ethlink run`; a test checks the values against np.percentile."""
    n = len(s)
    if s[-1] != s[-1]:
        return float("nan")
    v = (n - 1) * (q / 100)
    i = math.floor(v)
    if v >= n - 1:                          # numpy takes the last value (index -1) twice
        i = -1
        a = b = float(s[-1])
    else:
        a, b = float(s[i]), float(s[i + 1])
    t = v - i
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def _version():
    from . import __version__
    return __version__


def hpcc_params(sc: Scenario, auto_rtt_ps: int) -> dict | None:
    """The HPCC sender's constants (csrc/hpcc.pxd), or None when hpcc is off: T (hpcc.base_rtt,
    else the path's, `auto_rtt_ps`), W_init = line rate x T, W_AI (hpcc.w_ai, else
    W_init (1 - eta) / 100), the window floor min_rate x T; windows in bytes."""
    h = sc.hpcc
    if not h.enabled:
        return None
    t = h.base_rtt_ps or auto_rtt_ps
    w_init = max(1, int(sc.topology.rate_bps) * t // (8 * PS))
    return {"base_rtt_ps": int(t), "w_init_bytes": int(w_init),
            "w_ai_bytes": int(h.w_ai_bytes or max(1, round(w_init * (1 - h.eta) / 100))),
            "w_floor_bytes": int(max(1, h.min_rate_bps * t // (8 * PS)))}


class Simulation:
    """One scenario, compiled and ready. `run()` may be called again with a later
    `until` to continue."""

    def __init__(self, scenario: Scenario, *, trace: str | None = None, workload=None,
                 on_step: Callable[[str], None] | None = None):
        """`on_step(name)` is told each step of compiling (for a progress display)."""
        self.scenario = scenario
        self.compiled = c = compile_scenario(scenario, workload, on_step)
        if on_step is not None:
            on_step("engine")
        level = trace if trace is not None else scenario.run.trace
        self.trace_level = level
        dc = scenario.dcqcn
        ls = scenario.ls
        line = int(scenario.topology.rate_bps)
        rai = dc.rai_bps or line // 20
        self.hpcc = hpcc_params(scenario, c.hpcc_base_rtt_ps)
        self.engine = _engine.Engine(
            c.nodes, c.ports, c.queues, c.flows, c.qps, c.host_node, c.routes,
            seed=scenario.seed, dwrr_quantum=scenario.ports.quantum, ttl=scenario.run.ttl,
            trace_level=TRACE[level], trace_capacity=scenario.run.trace_capacity,
            lossless_mask=sum(1 << p for p in scenario.pfc.priorities) if scenario.pfc.enabled else 0,
            pfc_quanta=scenario.pfc.quanta, pfc_response_ps=scenario.pfc.response_ps,
            pfc_alpha=scenario.pfc.alpha, pfc_floor=max_frame_bytes(scenario), wd_action=WD_ACTIONS[scenario.pfc.watchdog],
            wd_detect_ps=scenario.pfc.detect_ps, wd_restore_ps=scenario.pfc.restore_ps,
            deadlock_check_ps=scenario.pfc.deadlock_check_ps,
            ack_every=scenario.roce.ack_every, ack_prio=scenario.roce.ack_prio,
            cnp_prio=scenario.roce.cnp_prio, ecn_capable=scenario.roce.ecn,
            rto_initial_ps=rto_initial_ps(scenario.roce), rto_max_ps=rto_cap_ps(scenario.roce),
            retry_limit=scenario.roce.retry_limit,
            cnp_interval_ps=scenario.roce.cnp_interval_ps, dcqcn=dc.enabled, dc_f=dc.f, dc_g=dc.g,
            dc_alpha_ps=dc.alpha_timer_ps, dc_timer_ps=dc.rate_timer_ps, dc_bytes=dc.byte_counter,
            dc_rai_bps=rai, dc_rhai_bps=dc.rhai_bps or 10 * rai, dc_min_bps=dc.min_rate_bps,
            dc_min_dec=dc.min_dec, dependents=c.dependents, ls_ops=c.ls_ops, ls_gpus=c.ls_gpus,
            ls_prio=ls.prio, ls_header=0 if ls.header == "ethlink" else 1,
            ls_relaxed=ls.ordering == "relaxed", ls_coalesce_bytes=ls.coalesce_bytes,
            ls_coalesce_wait_ps=ls.coalesce_wait_ps, ls_target_ps=ls.target_latency_ps,
            ls_timeout_ps=ls.timeout_ps,
            cbfc_mask=sum(1 << p for p in scenario.cbfc.priorities) if scenario.cbfc.enabled else 0,
            cbfc_cell=scenario.cbfc.cell,
            cbfc_update_cells=-(-(scenario.cbfc.update_bytes or max_frame_bytes(scenario)) // scenario.cbfc.cell),
            uet_spray=scenario.uet.spray, uet_trim=scenario.uet.trim, uet_trim_bytes=scenario.uet.trim_bytes,
            uet_trim_prio=scenario.uet.trim_prio, uet_rto_ps=scenario.uet.rto_ps,
            uet_retry_limit=scenario.uet.retry_limit,
            nscc=scenario.uet.nscc.enabled, **nscc_params(scenario),
            **({"hpcc": True, "hp_eta": scenario.hpcc.eta, "hp_max_stage": scenario.hpcc.max_stage,
                "hp_t_ps": self.hpcc["base_rtt_ps"], "hp_w_init": self.hpcc["w_init_bytes"],
                "hp_w_ai": self.hpcc["w_ai_bytes"], "hp_w_floor": self.hpcc["w_floor_bytes"]}
               if self.hpcc else {}))
        self.wall_s = 0.0

    def run(self, until: int | None = None, *, progress: Callable[[int, int, int], None] | None = None,
            trace_sink: Callable[[np.ndarray], None] | None = None, chunk_events: int = 2_000_000) -> Result:
        """Run to `until` ps (default: the scenario's run.until, else until idle).
        `progress(now_ps, horizon_ps, events)` is called every `chunk_events` events;
        `trace_sink(records)` receives every drained batch of trace records."""
        horizon = until if until is not None else (self.scenario.run.until_ps or 2**63 - 1)
        t0 = time.perf_counter()
        stop = "chunk"
        try:
            while True:
                stop = self.engine.run(horizon, chunk_events)
                # Drain the trace ring every time, sink or not: a full ring stops the loop.
                recs = self.engine.take_trace()
                if trace_sink is not None and len(recs):
                    trace_sink(recs)
                if progress is not None:
                    progress(self.engine.now, horizon, self.engine.events)
                if stop in ("until", "empty", "deadlock"):
                    break
        finally:
            self.wall_s += time.perf_counter() - t0
        return Result(self, self.wall_s, stop)
