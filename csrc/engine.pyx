# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# ethlink packet engine: the event loop, links, switches and hosts.
#
# What it models: full-duplex point-to-point links (rate, propagation delay) between
# output-queued switches with a shared buffer and hosts with multi-port NICs. A frame
# occupies the wire for its bytes plus 20 B of preamble and inter-frame gap (IEEE 802.3
# clause 4.4.2); its last bit reaches the peer ser(8 + size) + delay after its first bit
# left. A store-and-forward switch processes a frame when its last bit has arrived plus the
# switch's pipeline latency; a cut-through switch after the first CT_HEADER_BYTES when the
# egress is not faster than the ingress (as real switches do), else it falls back to
# store-and-forward. A switch admits a frame to an egress queue if the shared buffer has
# room and the queue is under its static limit or dynamic threshold (alpha x free buffer);
# otherwise the frame is dropped with a reason. ECMP picks among equal-cost next hops by a
# seeded hash of the flow (or of the packet, for spraying).
#
# The loop runs without the GIL and returns to Python only to drain the trace ring, to
# report progress (an event budget per call) or at the horizon. Python never sees a packet.
#
# Limits: one process, one core. Frames are not corrupted in this module (LLR adds bit
# errors). Buffer accounting is egress only here; PFC adds ingress accounting.
cimport numpy as cnp
import numpy as np
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy

from core cimport *
from libc.stdint cimport INT64_MAX
from port cimport q_push, q_pop, pick_queue, ctrl_pop
from pfc cimport (pfc_admit, pfc_on_admit, pfc_on_depart, pfc_refresh, pfc_rx, pause_end,
                  pause_close, pfc_find_cycle, WD_OFF, WD_DROP, WD_IGNORE)
from ecn cimport ecn_should_mark, ECN_CE
from nic cimport ring_push, ring_pop, qp_activate, host_port
from route cimport Hops, route_hops, route_nth, route_spray
from flows cimport raw_make_packet, raw_deliver
from roce cimport (roce_next_packet, roce_has_more, roce_rx_data, roce_rx_ack, roce_rto, msg_holding)
from uet cimport uet_next_packet, uet_has_more, uet_rx_data, uet_rx_ack, uet_rto
from dcqcn cimport dc_on_cnp, dc_timer
from hpcc cimport hp_push, hp_on_ack, INT_BASE_BYTES, INT_HOP_BYTES
from loadstore cimport ls_rx, ls_on_tx, ls_event, ls_try_issue
from cbfc cimport cbfc_cells, cbfc_freed, cbfc_rx
from llr cimport llr_mark, llr_accept, llr_nack, replay_pop

cnp.import_array()


# ---------------------------------------------------------------------------------------
# Ports: start the next frame, finish a frame.

cdef inline int32_t raw_next_packet(Sim* s, int32_t qi) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    cdef int32_t f, pi
    if q.snd_nxt >= q.psn_end:
        return NO_PKT
    f = msg_holding(s, q.msg_cur, q.snd_nxt)    # raw senders never go back: from msg_cur
    q.msg_cur = f
    pi = raw_make_packet(s, qi, f)
    if pi >= 0:
        s.flows[f].sent += s.pkts[pi].payload
        s.flows[f].packets += 1
        s.bytes_sent += s.pkts[pi].payload
        q.snd_nxt += 1
    return pi


cdef inline bint host_sprays(Sim* s, Qp* q) noexcept nogil:
    # A QP whose frames take the host's equal-cost ports in turn: every QP of a host in
    # spray mode, and UET QPs with uet.spray (UET sprays each packet, over NIC ports and
    # planes as over switch links).
    return s.nodes[s.host_node[q.host]].ecmp == ECMP_SPRAY or (q.transport == TR_UET and s.uet_spray)


cdef inline void host_refill(Sim* s, int32_t port) noexcept nogil:
    # For each priority whose NIC queue is empty, ask the ring's QPs, round robin, for
    # one frame. A QP that has nothing it may send now leaves the ring.
    cdef int32_t prio, ring, qi, pi, nxt
    cdef Qp* q
    cdef bint more
    cdef uint32_t m = s.ring_mask[port]
    while m:
        # the priorities whose ring is not empty, lowest first (as a loop over all eight)
        prio = ctz32(m)
        ring = port * NPRIO + prio
        while s.ring_head[ring] >= 0 and s.queues[ring].head < 0:
            qi = ring_pop(s, ring)
            q = &s.qps[qi]
            if q.transport == TR_RAW:
                pi = raw_next_packet(s, qi)
                more = q.snd_nxt < q.psn_end
            elif q.transport == TR_UET:
                pi = uet_next_packet(s, qi)
                more = pi >= 0 and uet_has_more(s, qi)
            else:
                pi = roce_next_packet(s, qi)
                more = pi >= 0 and roce_has_more(s, qi)
            if pi >= 0:
                s.pkts_sent += 1
                q_push(s, &s.queues[ring], pi)
                trace_pkt(s, TE_ENQUEUE, s.ports[port].node, port, pi, s.queues[ring].bytes, DR_NONE)
            if more:
                nxt = port
                if host_sprays(s, q):
                    nxt = route_spray(s, s.ports[port].node, s.pkts[pi].dst, q.snd_nxt)
                q.port = nxt
                ring_push(s, nxt * NPRIO + prio, qi)
                if nxt != port:
                    kick(s, nxt)
            if s.error:
                return
        m = s.ring_mask[port] & ~((<uint32_t>2 << prio) - 1)


cdef inline void tx_start(Sim* s, int32_t p, int32_t pi, bint replay) noexcept nogil:
    cdef Port* pt = &s.ports[p]
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t peer = pt.peer
    cdef int32_t peer_node = pt.peer_node
    cdef Node* pn = &s.nodes[peer_node]
    cdef int64_t wire, t_rx
    if pk.flags & PF_INT:
        # HPCC: a switch egress appends its INT record to a data frame before its first bit
        # (hpcc.pxd); an ACK carries the records back unchanged
        if pk.kind == FK_ROCE and not replay and s.nodes[pt.node].kind == NODE_SWITCH:
            hp_push(s, p, pi)
        s.hp_int_bytes += INT_BASE_BYTES + INT_HOP_BYTES * s.hp_int[pi].n
    wire = port_ser_ps(pt, pk.size + WIRE_EXTRA_BYTES)
    pt.busy = 1
    pt.busy_ps += wire
    pt.tx_bytes += pk.size
    pt.tx_frames += 1
    trace_pkt(s, TE_TX_START, pt.node, p, pi, s.queues[p * NPRIO + pk.prio].bytes, DR_NONE)
    if pt.ctrl_head >= 0 or pt.replay_go or pt.qmask or s.ring_mask[p]:
        schedule(s, s.now + wire, EV_TX_DONE, p, tx_next_hint(s, p))
    else:                                   # nothing waits: elided (port_busy)
        pt.busy = 2
        pt.tx_end = s.now + wire
        pt.tx_seq = s.seq
        s.seq += 1
    pk.t_last = s.now + port_ser_ps(pt, PREAMBLE_BYTES + pk.size) + pt.delay_ps
    if pk.kind == FK_PFC or pk.kind == FK_CBFC:
        # Link-local control: consumed by the peer's MAC, no pipeline latency.
        link_push(s, peer, pk.t_last + s.pfc_response_ps, pi, 1)
        return
    s.data_tx += 1
    if replay:
        pt.llr_replays += 1
        s.llr_replays += 1
        trace_pkt(s, TE_LLR_REPLAY, pt.node, p, pi, 0, DR_NONE)
    elif pt.llr:
        pk.llr_seq = pt.llr_seq
        pt.llr_seq += 1
    llr_mark(s, pt, pk)
    if s.cbfc_mask and s.queues[p * NPRIO + pk.prio].cbfc_limit > 0 and not replay:
        s.queues[p * NPRIO + pk.prio].cbfc_used += cbfc_cells(s, pk.size)
    if (pk.flags & (PF_LS | PF_RESPONSE)) == PF_LS and pk.in_port < 0 and pk.hops == 0:
        ls_on_tx(s, pi)
    if pk.in_port < 0 and pk.flow >= 0 and not (pk.flags & PF_LS) and s.flows[pk.flow].first_tx_ps < 0:
        # (a Load/Store frame's flow is an operation index, not a flow)
        s.flows[pk.flow].first_tx_ps = s.now
    t_rx = pk.t_last
    if pn.cut_through and pk.size > CT_HEADER_BYTES:
        t_rx = s.now + port_ser_ps(pt, PREAMBLE_BYTES + CT_HEADER_BYTES) + pt.delay_ps
    pk.hops += 1
    s.hops += 1
    if pn.kind == NODE_SWITCH:
        # NOTE: routing is a function of the frame and the switch only, so the frame's
        # egress there is chosen now: the loop can then prefetch that egress port's queue
        # several events before the arrival that enqueues the frame (run_loop).
        pk.egress = route(s, peer_node, pi)
    elif pk.kind != FK_RAW and not (pk.flags & PF_LS):
        # (likewise: the QP its arrival at the host reads, named for the loop to prefetch;
        # -1 for none. A raw frame's second line, where qp is, is left unread.)
        pk.egress = EGRESS_TO_QP - pk.qp
    else:
        pk.egress = -1
    link_push(s, peer, t_rx + pn.latency_ps, pi, 0)


cdef inline void leave_switch(Sim* s, Node* nd, int32_t pi) noexcept nogil:
    # Buffer (and PFC ingress) accounting when a frame leaves a switch's queue.
    cdef Packet* pk = &s.pkts[pi]
    nd.buffer_used -= pk.size
    if s.lossless_mask & (1 << pk.prio):
        pfc_on_depart(s, nd, pk)            # shared and headroom pools
    else:
        nd.shared_used -= pk.size
    if s.cbfc_mask & (1 << pk.prio):
        cbfc_freed(s, pk.in_port, pk.prio, pk.size)


cdef inline void port_try_start(Sim* s, int32_t p) noexcept nogil:
    cdef int32_t prio, pi
    cdef Node* nd
    if port_busy(s, p):
        return
    pi = ctrl_pop(s, &s.ports[p])
    if pi >= 0:
        tx_start(s, p, pi, 0)
        return
    if s.ports[p].replay_go:
        # Going back N: frames are sent again in order; no new frame until that is done.
        pi = replay_pop(s, &s.ports[p])
        if pi >= 0:
            tx_start(s, p, pi, 1)
            return
        if s.ports[p].replay_go:
            return                          # the next one is still on its way back
    nd = &s.nodes[s.ports[p].node]
    if nd.kind == NODE_HOST:
        host_refill(s, p)
    prio = pick_queue(s, p)
    if prio < 0:
        return
    pi = q_pop(s, &s.queues[p * NPRIO + prio])
    if nd.kind == NODE_SWITCH:
        leave_switch(s, nd, pi)
    tx_start(s, p, pi, 0)


# ---------------------------------------------------------------------------------------
# Switches: route, admit, enqueue.

cdef inline void drop(Sim* s, int32_t node, int32_t port, int32_t pi, uint8_t reason) noexcept nogil:
    cdef Packet* pk = &s.pkts[pi]
    cdef int64_t qb = 0
    if port >= 0:
        qb = s.queues[port * NPRIO + pk.prio].bytes
        s.queues[port * NPRIO + pk.prio].drops += 1
        s.queues[port * NPRIO + pk.prio].drop_bytes += pk.size
    trace_pkt(s, TE_DROP, node, port, pi, qb, reason)
    s.drops[reason] += 1
    if (s.lossless_mask | s.cbfc_mask) & (1 << pk.prio):
        s.lossless_drops += 1
    s.pkts_dropped += 1
    s.bytes_dropped += pk.payload
    if not (pk.flags & PF_LS):
        s.bytes_dropped_flow += pk.payload
    pkt_free(s, pi)


cdef inline int32_t route(Sim* s, int32_t node, int32_t pi) noexcept nogil:
    cdef Packet* pk = &s.pkts[pi]
    cdef Hops hops = route_hops(s, node, pk.dst)
    cdef uint64_t h
    if hops.n <= 0:
        return -1
    if hops.n == 1:
        return hops.first
    if s.nodes[node].ecmp == ECMP_SPRAY or (pk.kind == FK_UET and s.uet_spray):
        # spraying; a UET packet's own entropy (UDP source port) when uet.spray is on
        h = hash3(s.seed, <uint64_t>node | (<uint64_t>1 << 40), <uint64_t>pk.uid)
    else:
        h = hash3(s.seed, <uint64_t>node, <uint64_t>(pk.flow if pk.flow >= 0 else pk.src))
    return route_nth(s, &hops, node, pk.dst, <int32_t>(h % <uint64_t>hops.n))


cdef inline uint8_t admit(Sim* s, Node* nd, Queue* q, int32_t size) noexcept nogil:
    # Lossy frames: the shared pool, under the egress queue's threshold.
    if nd.shared_used + size > nd.shared_bytes:
        return DR_BUFFER_FULL
    if nd.threshold == THR_STATIC:
        if q.bytes + size > nd.queue_limit:
            return DR_QUEUE_LIMIT
    elif q.bytes + size > nd.alpha * <double>(nd.shared_bytes - nd.shared_used):
        return DR_QUEUE_LIMIT
    return DR_NONE


cdef inline void switch_enqueue(Sim* s, int32_t node, int32_t pi) noexcept nogil:
    cdef Node* nd = &s.nodes[node]
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t e = pk.egress
    cdef Queue* q = &s.queues[e * NPRIO + pk.prio]
    cdef uint8_t reason
    cdef bint to_hdrm = 0
    if q.wd_until > s.now and s.wd_action == WD_DROP:
        reason = DR_WATCHDOG
    elif s.lossless_mask & (1 << pk.prio):
        reason = pfc_admit(s, nd, pk, &to_hdrm)
    elif s.cbfc_mask & (1 << pk.prio):
        # credits guarantee room per link: only the pool bounds it, no egress threshold
        reason = DR_BUFFER_FULL if nd.shared_used + pk.size > nd.shared_bytes else DR_NONE
    else:
        reason = admit(s, nd, q, pk.size)
    if reason != DR_NONE and pk.kind == FK_UET and s.uet_trim and not (pk.flags & PF_TRIM) \
            and not ((s.lossless_mask | s.cbfc_mask) & (1 << pk.prio)):
        # UET packet trimming (UET 1.0 section 3.5, "packet trimming"): cut the frame to
        # its headers and forward it at the trimmed class; it is dropped only if even that
        # fails admission. Its payload is counted as trimmed here, not as dropped.
        s.uet_trimmed += 1
        s.uet_trimmed_bytes += pk.payload
        trace_pkt(s, TE_TRIM, node, e, pi, q.bytes, reason)
        pk.payload = 0
        pk.size = s.uet_trim_bytes
        pk.flags |= PF_TRIM
        pk.prio = <uint8_t>s.uet_trim_prio
        q = &s.queues[e * NPRIO + pk.prio]
        reason = admit(s, nd, q, pk.size)
    if reason != DR_NONE:
        if s.cbfc_mask & (1 << pk.prio):
            cbfc_freed(s, pk.in_port, pk.prio, pk.size)     # a dropped frame's credits return
        drop(s, node, e, pi, reason)
        return
    if ecn_should_mark(s, &s.ports[e], q, pk):
        pk.ecn = ECN_CE
        q.marks += 1
        s.ecn_marked += 1
        trace_pkt(s, TE_MARK, node, e, pi, q.bytes, DR_NONE)
    q_push(s, q, pi)
    nd.buffer_used += pk.size
    if nd.buffer_used > nd.buffer_hwm:
        nd.buffer_hwm = nd.buffer_used
    trace_pkt(s, TE_ENQUEUE, node, e, pi, q.bytes, DR_NONE)
    if s.lossless_mask & (1 << pk.prio):
        pfc_on_admit(s, nd, pk, to_hdrm)    # shared and headroom pools
    else:
        nd.shared_used += pk.size
    port_try_start(s, e)


cdef inline void switch_rx(Sim* s, int32_t inport, int32_t pi) noexcept nogil:
    cdef int32_t node = s.ports[inport].node
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t e
    if pk.flags & PF_ROUTED:
        # Second visit: a cut-through frame that had to wait for its last bit.
        pk.flags &= ~PF_ROUTED
        switch_enqueue(s, node, pi)
        return
    trace_pkt(s, TE_RX, node, inport, pi, 0, DR_NONE)
    if pk.hops >= s.ttl:
        drop(s, node, -1, pi, DR_TTL)
        return
    e = pk.egress                           # routed when it was sent to this switch (tx_start)
    if e < 0:
        drop(s, node, -1, pi, DR_NO_ROUTE)
        return
    pk.in_port = inport
    if s.nodes[node].cut_through and s.now < pk.t_last + s.nodes[node].latency_ps \
            and s.ports[e].rate_bps > s.ports[inport].rate_bps:
        # A faster egress would underrun: wait for the whole frame (store-and-forward).
        pk.flags |= PF_ROUTED
        schedule(s, pk.t_last + s.nodes[node].latency_ps, EV_RX, inport, pi)
        return
    switch_enqueue(s, node, pi)


# ---------------------------------------------------------------------------------------
# Hosts: deliver, start flows.

cdef inline void host_rx(Sim* s, int32_t inport, int32_t pi) noexcept nogil:
    cdef int32_t node = s.ports[inport].node
    cdef Packet* pk = &s.pkts[pi]
    if pk.dst != s.nodes[node].host:
        drop(s, node, -1, pi, DR_NO_ROUTE)
        return
    trace_pkt(s, TE_DELIVER, node, inport, pi, 0, DR_NONE)
    if s.cbfc_mask & (1 << pk.prio):
        cbfc_freed(s, inport, pk.prio, pk.size)
    if pk.flags & PF_LS:
        ls_rx(s, pi)
    elif pk.kind == FK_RAW:
        raw_deliver(s, pi)
    elif pk.kind == FK_ROCE:
        roce_rx_data(s, pi)
    elif pk.kind == FK_ROCE_ACK:
        roce_rx_ack(s, pi)
    elif pk.kind == FK_CNP:
        dc_on_cnp(s, pk.qp)
    elif pk.kind == FK_UET:
        uet_rx_data(s, pi)
    elif pk.kind == FK_UET_CTRL:
        uet_rx_ack(s, pi)
    pkt_free(s, pi)


cdef inline void flow_start(Sim* s, int32_t f) noexcept nogil:
    # Post message f on its QP: give it its PSNs and make the QP ready to send.
    cdef Flow* fl = &s.flows[f]
    cdef Qp* q = &s.qps[fl.qp]
    trace_flow(s, TE_OP_ISSUE, f)
    fl.psn_start = q.psn_end
    q.psn_end += fl.npkts
    fl.next = -1
    if q.msg_head < 0:
        q.msg_head = f                      # every earlier message completed (or none)
        q.msg_cur = f
    else:
        s.flows[q.msg_tail].next = f
    q.msg_tail = f
    if q.msg_cur < 0:
        q.msg_cur = f
    if q.port < 0:
        q.port = host_port(s, q.host, fl.dst, <uint64_t>fl.qp)
        if host_sprays(s, q):
            q.port = route_spray(s, s.host_node[q.host], fl.dst, 0)
        if q.peer >= 0:
            s.qps[q.peer].port = host_port(s, fl.dst, q.host, <uint64_t>q.peer)
    qp_activate(s, fl.qp)


cdef inline void schedule_next_flow(Sim* s) noexcept nogil:
    # Flows without dependencies start in start-time order, one event at a time (a million
    # flows never sit in the event queue at once); arg 1 marks this chain.
    cdef int32_t f
    if s.next_flow_start < s.n_ordered:
        f = s.flow_order[s.next_flow_start]
        s.next_flow_start += 1
        schedule(s, s.flows[f].start_ps, EV_FLOW_START, f, 1)


# ---------------------------------------------------------------------------------------
# PFC watchdog and deadlock check (policy in csrc/pfc.pxd's header).

cdef inline void watchdog(Sim* s, int32_t qi) noexcept nogil:
    cdef Queue* q = &s.queues[qi]
    cdef int32_t port = qi // NPRIO, node = s.ports[port].node, pi
    cdef Node* nd = &s.nodes[node]
    if q.pause_since < 0 or q.paused_until <= s.now:
        return                              # the pause ended since it was armed
    if s.now - q.pause_since < s.wd_detect_ps or q.head < 0:
        schedule(s, q.pause_since + s.wd_detect_ps if s.now - q.pause_since < s.wd_detect_ps
                 else s.now + s.wd_detect_ps, EV_WATCHDOG, qi, 0)
        return
    q.storms += 1
    s.storms += 1
    q.wd_until = s.now + s.wd_restore_ps
    if s.wd_action == WD_DROP:
        while q.head >= 0:
            pi = q_pop(s, q)
            if nd.kind == NODE_SWITCH:
                leave_switch(s, nd, pi)
            drop(s, node, port, pi, DR_WATCHDOG)
    pause_close(s, q, s.now)
    q.pause_since = s.now                   # re-armed: checked again after restoration
    schedule(s, q.wd_until + s.wd_detect_ps, EV_WATCHDOG, qi, 0)
    kick(s, port)


cdef inline bint deadlock_check(Sim* s) noexcept nogil:
    # True when stuck paused queues wait on each other in a cycle (csrc/pfc.pxd).
    cdef int32_t n = pfc_find_cycle(s)
    if n < 0:
        s.error = 1
        return 0
    if n > 0:
        s.deadlock_ps = s.now
        return 1
    if s.pkts_live > 0:
        schedule(s, s.now + s.deadlock_check_ps, EV_DEADLOCK_CHECK, 0, 0)
    else:
        s.dl_armed = 0                      # the next packet re-arms it (core.pxd pkt_alloc)
    return 0


cdef inline void qp_timer(Sim* s, int32_t qi, int64_t arg) noexcept nogil:
    cdef int32_t kind = <int32_t>(arg & 0xFF), gen = <int32_t>(arg >> 8)
    if kind == QT_WAKE:
        s.qps[qi].wake_pending = 0
        qp_activate(s, qi)
    elif kind == QT_RTO:
        if s.qps[qi].transport == TR_UET:
            uet_rto(s, qi, gen)
        else:
            roce_rto(s, qi, gen)
    else:
        dc_timer(s, qi, kind, gen)


# ---------------------------------------------------------------------------------------
# The loop.

cdef int64_t settle_elided(Sim* s, int64_t time, int64_t seq) noexcept nogil:
    # The loop stops before (time, seq): every elided EV_TX_DONE before it has happened
    # (port_busy), so now, the active time and the event count are what they would be.
    # Returns how many are still to come.
    cdef int32_t p
    cdef int64_t left = 0
    cdef Port* pt
    for p in range(s.n_ports):
        pt = &s.ports[p]
        if pt.busy == 2:
            if pt.tx_end < time or (pt.tx_end == time and pt.tx_seq < seq):
                tx_done_elided(s, pt)
                if pt.tx_end > s.now:
                    s.now = pt.tx_end
            else:
                left += 1
    return left


cdef inline void prefetch_next(Sim* s, Event* nx) noexcept nogil:
    # NOTE: what the next event will read first was last touched many events ago (on a
    # large fabric, thousands): fetch those cache lines now, while this event is processed.
    # An arrival reads its frame (which also holds the link's next arrival, link_pop); a
    # port that finished a frame reads the queue and frame it likely sends next (the
    # event's tx_next_hint). A miss here was a fifth of the loop on the 1024-host
    # permutation.
    if nx.kind == EV_LINK_RX or nx.kind == EV_RX:
        prefetch(&s.pkts[nx.arg])
    elif nx.kind == EV_TX_DONE and nx.arg >= 0:
        prefetch(&s.queues[nx.obj * NPRIO + (nx.arg >> 32)])
        prefetch(&s.pkts[<int32_t>nx.arg])


cdef enum:
    # NOTE: one event of warning is shorter than a miss to L3 on this machine class; the
    # sorted run (evq.h) shows the events further on, so their frames (and ports) are
    # fetched this many events early as well. 4 to 16 measured alike (RoCE permutation).
    PREFETCH_AHEAD = 8

cdef int run_loop(Sim* s, int64_t until, int64_t budget) noexcept nogil:
    cdef Event ev
    cdef Event* top
    cdef const Event* ah
    cdef int32_t e, qi
    cdef uint32_t m
    cdef int64_t done = 0
    cdef int32_t node
    cdef int err = 0
    while True:
        top = evq_top(&s.evq, &err)
        if top == NULL:
            break
        if top.time > until:
            settle_elided(s, until, INT64_MAX)
            return STOP_UNTIL
        if done >= budget:
            return STOP_CHUNK
        if s.trace_level != TRACE_OFF and s.trace_n + s.trace_margin > s.trace_batch:
            return STOP_TRACE
        evq_pop(&s.evq, &ev)
        s.cur_seq = ev.seq
        if ev.kind == EV_LINK_RX:           # the head of a link's arrivals: the next takes its place
            link_pop(s, ev.obj, <int32_t>ev.arg, s.pkts[ev.arg].kind == FK_PFC or s.pkts[ev.arg].kind == FK_CBFC)
            ev.kind = EV_RX
        top = evq_top(&s.evq, &err)
        if top != NULL:
            prefetch_next(s, top)
        # NOTE: the look-ahead prefetch (PREFETCH_AHEAD above) is written here in the loop:
        # moved into an inline function of its own, gcc 12 (-O3) compiled none of its
        # prefetches (7 prefetch instructions in the extension instead of 17; a void
        # function that only reads and prefetches looks free of side effects) and the
        # 1024-host permutation ran 20 % slower. Count run_loop's own after a change
        # (objdump -d: 11 since the receiving port's first line is no longer fetched).
        ah = evq_ahead(&s.evq, PREFETCH_AHEAD)
        if ah != NULL:
            if ah.kind == EV_LINK_RX or ah.kind == EV_RX:
                # the frame, and the receiving port's line the arrival reads (its
                # node, counters and link FIFO)
                prefetch(&s.pkts[ah.arg])
                prefetch(<char*>&s.ports[ah.obj] + 64)
            elif ah.kind == EV_TX_DONE:
                prefetch(&s.ports[ah.obj])
                prefetch(<char*>&s.ports[ah.obj] + 64)
                if ah.arg >= 0:
                    # the queue and frame it will likely send next (tx_next_hint)
                    prefetch(&s.queues[ah.obj * NPRIO + (ah.arg >> 32)])
                    prefetch(&s.pkts[<int32_t>ah.arg])
                m = s.ring_mask[ah.obj]
                if m:
                    # a NIC port: the QP its refill asks first (host_refill)
                    qi = s.ring_head[ah.obj * NPRIO + ctz32(m)]
                    if qi >= 0:
                        prefetch(&s.qps[qi])
        ah = evq_ahead(&s.evq, PREFETCH_AHEAD // 2)
        if ah != NULL and ah.kind == EV_TX_DONE:
            # that QP (fetched above) and the message it is sending
            m = s.ring_mask[ah.obj]
            if m:
                qi = s.ring_head[ah.obj * NPRIO + ctz32(m)]
                if qi >= 0 and s.qps[qi].msg_cur >= 0:
                    prefetch(&s.flows[s.qps[qi].msg_cur])
        elif ah != NULL and ah.kind == EV_LINK_RX:
            # its frame was fetched above, PREFETCH_AHEAD / 2 events ago: now what its
            # enqueue reads, the egress queue (routed when sent, tx_start) and port
            e = s.pkts[ah.arg].egress
            if e >= 0:
                prefetch(&s.queues[e * NPRIO + s.pkts[ah.arg].prio])
                prefetch(&s.ports[e])
            elif e <= EGRESS_TO_QP:
                # a transport frame reaching its host: the frame's second line (PSN, QP)
                # and what its QP's receive (epsn) or ACK handling (snd_una, the timer,
                # acks_rx) reads: a RoCE permutation's host arrivals missed on both
                qi = EGRESS_TO_QP - e
                prefetch(<char*>&s.pkts[ah.arg] + 64)
                prefetch(&s.qps[qi])
                prefetch(&s.qps[qi].epsn)
                prefetch(&s.qps[qi].acks_rx)
        s.now = ev.time
        s.events += 1
        done += 1
        if ev.kind <= EV_FLOW_START or (ev.kind == EV_LS and (ev.arg & 0xFF) != LE_TIMEOUT):
            # frames, flow and operation starts; not protocol timers
            s.t_active = ev.time
        if ev.kind == EV_RX:
            node = s.ports[ev.obj].node
            if not (s.pkts[ev.arg].flags & PF_ROUTED):     # not the cut-through second visit
                s.ports[ev.obj].rx_bytes += s.pkts[ev.arg].size
                s.ports[ev.obj].rx_frames += 1
            if s.pkts[ev.arg].kind == FK_PFC:
                pfc_rx(s, ev.obj, <int32_t>ev.arg)
            elif s.pkts[ev.arg].kind == FK_CBFC:
                cbfc_rx(s, ev.obj, <int32_t>ev.arg)
            elif not (s.pkts[ev.arg].flags & PF_ROUTED) and not llr_accept(s, ev.obj, <int32_t>ev.arg):
                if not s.ports[s.ports[ev.obj].peer].llr:
                    s.fcs_drops += 1
                    if s.cbfc_mask & (1 << s.pkts[ev.arg].prio):
                        # the lost frame takes no room at the receiver: its credits return
                        cbfc_freed(s, ev.obj, s.pkts[ev.arg].prio, s.pkts[ev.arg].size)
                    drop(s, node, -1, <int32_t>ev.arg, DR_FCS)
            elif s.nodes[node].kind == NODE_SWITCH:
                switch_rx(s, ev.obj, <int32_t>ev.arg)
            else:
                host_rx(s, ev.obj, <int32_t>ev.arg)
        elif ev.kind == EV_TX_DONE:
            s.ports[ev.obj].busy = 0
            port_try_start(s, ev.obj)
        elif ev.kind == EV_KICK:
            s.ports[ev.obj].kicked = 0
            port_try_start(s, ev.obj)
        elif ev.kind == EV_FLOW_START:
            flow_start(s, ev.obj)
            if ev.arg == 1:
                schedule_next_flow(s)
        elif ev.kind == EV_PAUSE_END:
            pause_end(s, ev.obj)
        elif ev.kind == EV_PFC_REFRESH:
            pfc_refresh(s, ev.obj, ev.arg)
        elif ev.kind == EV_WATCHDOG:
            watchdog(s, ev.obj)
        elif ev.kind == EV_QP_TIMER:
            qp_timer(s, ev.obj, ev.arg)
        elif ev.kind == EV_LS:
            ls_event(s, ev.obj, ev.arg)
        elif ev.kind == EV_LLR_NACK:
            llr_nack(s, ev.obj, <int32_t>ev.arg)
        elif ev.kind == EV_DEADLOCK_CHECK:
            if deadlock_check(s):
                settle_elided(s, s.now, s.cur_seq)
                return STOP_DEADLOCK
        if s.error:
            return STOP_ERROR
    if err:
        s.error = 1
        return STOP_ERROR
    if settle_elided(s, until, INT64_MAX):
        return STOP_UNTIL                   # an elided EV_TX_DONE after `until` is pending
    return STOP_EMPTY


# ---------------------------------------------------------------------------------------
# Struct dtypes, so Python reads engine tables as numpy structured arrays.

cdef Node _node
cdef Port _port
cdef Queue _queue
cdef Flow _flow
cdef Qp _qp
cdef LsOp _lsop
cdef LsGpu _lsgpu
cdef TraceRec _trace
cdef Packet _packet
cdef Event _event

NODE_DTYPE = np.asarray(<Node[:1]>&_node).dtype
PORT_DTYPE = np.asarray(<Port[:1]>&_port).dtype
QUEUE_DTYPE = np.asarray(<Queue[:1]>&_queue).dtype
FLOW_DTYPE = np.asarray(<Flow[:1]>&_flow).dtype
QP_DTYPE = np.asarray(<Qp[:1]>&_qp).dtype
LSOP_DTYPE = np.asarray(<LsOp[:1]>&_lsop).dtype
LSGPU_DTYPE = np.asarray(<LsGpu[:1]>&_lsgpu).dtype
TRACE_DTYPE = np.asarray(<TraceRec[:1]>&_trace).dtype
PACKET_BYTES = sizeof(Packet)
EVENT_BYTES = sizeof(Event)

STOP_NAMES = ("empty", "until", "chunk", "trace", "error", "deadlock")
ERROR_NAMES = {0: "", 1: "out of memory", 2: "packet pool limit (2**30 packets in flight)"}
DROP_REASON_COUNT = 8


def _aligned(arr, Py_ssize_t align=64):
    """A copy of `arr` whose records start on a cache line (Port, Queue: each record's hot
    fields are its first lines; see csrc/core.pxd)."""
    buf = np.empty(arr.nbytes + align, dtype=np.uint8)
    off = (-buf.ctypes.data) % align
    out = buf[off:off + arr.nbytes].view(arr.dtype)
    out[...] = arr
    return out


def _wheel(ports, nodes, int64_t pfc_response_ps, int shift, int64_t slots):
    """The event wheel's bucket width (2^shift ps) and slot count (evq.h).
    NOTE: a bucket about a third of the fastest port's minimum frame time holds a few
    events; the horizon covers the longest link's delay plus its largest frame and the
    slowest pipeline, so frame events go to the wheel and only protocol timers go past it."""
    if len(ports) == 0:
        return (max(shift, 0), max(slots, 64))
    if shift < 0:
        fastest = int(ports["rate_bps"].max())
        t_min = max(1, ((MIN_FRAME_BYTES + WIRE_EXTRA_BYTES) * 8 * 1000000000000) // fastest)
        shift = max(0, (t_min // 3).bit_length() - 1)
    if slots <= 0:
        slowest = int(ports["rate_bps"].min())
        # (9216 B: the largest frame a switch takes, scenario.py MAX_MTU + 216)
        horizon = int(ports["delay_ps"].max()) + ((9216 + WIRE_EXTRA_BYTES) * 8 * 1000000000000) // slowest \
            + (int(nodes["latency_ps"].max()) if len(nodes) else 0) + pfc_response_ps
        slots = 64
        while slots < (1 << 16) and (slots << shift) < 2 * horizon:
            slots <<= 1
    if slots < 64 or slots & (slots - 1):
        raise ValueError("evq_slots: a power of 2, at least 64")
    return (shift, slots)


ROUTE_SET16_MAX = 32767     # most route sets a table stores as int16 (tests lower it)


def _host_down(nodes, ports, host_node):
    """Sim.host_down: per host, the node its one port is linked to and that node's port
    back to it ((-1, -1) for a host with several ports, or none linked)."""
    down = np.full((max(1, len(host_node)), 2), -1, dtype=np.int32)
    if len(host_node) and len(ports):
        hn = np.asarray(host_node, dtype=np.int64)
        fp = nodes["first_port"][hn].astype(np.int64)
        one = (nodes["nports"][hn] == 1) & (fp >= 0) & (fp < len(ports))
        pp = np.where(one, ports["peer"][np.where(one, fp, 0)], -1).astype(np.int64)
        one &= (pp >= 0) & (pp < len(ports))
        down[one, 0] = ports["node"][pp[one]]
        down[one, 1] = pp[one]
    return down.reshape(-1)


def _as(arr, dtype, name):
    arr = np.ascontiguousarray(arr)
    if arr.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {arr.dtype}")
    return arr


cdef class Engine:
    """One simulation's engine state. Tables are numpy structured arrays that the engine
    reads and updates in place; construct through ethlink.Simulation, not directly."""
    cdef Sim s
    cdef readonly object nodes, ports, queues, flows, qps, ls_ops, ls_gpus
    cdef object _host_node, _route_off, _route_port, _ring_head, _ring_tail, _ring_mask, _flow_order
    cdef object _node_row, _host_class, _route_set, _host_down
    cdef object _dep_off, _dep_list
    cdef object _uet_st, _uet_sent
    cdef bint started

    def __cinit__(self):
        memset(&self.s, 0, sizeof(Sim))

    def __init__(self, nodes, ports, queues, flows, qps, host_node, routes,
                 *, uint64_t seed=1, int64_t dwrr_quantum=9216, int32_t ttl=64,
                 int32_t trace_level=TRACE_OFF, int64_t trace_capacity=16384,
                 int32_t initial_packets=4096, int32_t lossless_mask=0, int32_t pfc_quanta=0xFFFF,
                 int64_t pfc_response_ps=0, double pfc_alpha=1.0, int64_t pfc_floor=0,
                 int32_t wd_action=WD_OFF, int64_t wd_detect_ps=0, int64_t wd_restore_ps=0,
                 int64_t deadlock_check_ps=0, int32_t ack_every=1, int32_t ack_prio=-1,
                 int32_t cnp_prio=6, bint ecn_capable=False, int64_t rto_initial_ps=0,
                 int64_t rto_max_ps=0, int32_t retry_limit=7, int64_t cnp_interval_ps=0, bint dcqcn=False,
                 int32_t dc_f=5, double dc_g=1.0 / 256, int64_t dc_alpha_ps=0,
                 int64_t dc_timer_ps=0, int64_t dc_bytes=0, int64_t dc_rai_bps=0,
                 int64_t dc_rhai_bps=0, int64_t dc_min_bps=0, double dc_min_dec=0.5,
                 dependents=None, ls_ops=None, ls_gpus=None, int32_t ls_prio=5,
                 int32_t ls_header=0, bint ls_relaxed=False, int32_t ls_coalesce_bytes=0,
                 int64_t ls_coalesce_wait_ps=0, int64_t ls_target_ps=0, int64_t ls_timeout_ps=0,
                 int32_t cbfc_mask=0, int32_t cbfc_cell=64, int64_t cbfc_update_cells=1,
                 bint hpcc=False, double hp_eta=0.95, int32_t hp_max_stage=5, int64_t hp_t_ps=0,
                 int64_t hp_w_init=0, int64_t hp_w_ai=0, int64_t hp_w_floor=1,
                 bint uet_spray=True, bint uet_trim=False, int32_t uet_trim_bytes=106,
                 int32_t uet_trim_prio=7, int64_t uet_rto_ps=0, int32_t uet_retry_limit=1000,
                 bint nscc=False,
                 int64_t nscc_rtt_ps=0, int64_t nscc_target_ps=0, int64_t nscc_qa_ps=0,
                 int64_t nscc_fast_ps=0, int64_t nscc_period_ps=0, int64_t nscc_adjust_bytes=0,
                 double nscc_alpha=0, double nscc_fi=0, double nscc_eta=0, double nscc_gamma=0.8,
                 double nscc_delay_alpha=0.0125, double nscc_maxwnd_bdp=1.5,
                 int evq_shift=-1, int64_t evq_slots=0):
        cdef Sim* s = &self.s
        cdef int32_t i
        self.nodes = _as(nodes, NODE_DTYPE, "nodes")
        self.ports = _aligned(_as(ports, PORT_DTYPE, "ports"))
        self.queues = _aligned(_as(queues, QUEUE_DTYPE, "queues"))
        self.flows = _as(flows, FLOW_DTYPE, "flows")
        self.qps = _as(qps, QP_DTYPE, "qps")
        if len(self.flows) and (self.flows["qp"].min() < 0 or self.flows["qp"].max() >= len(self.qps)):
            raise ValueError("flows.qp: every message needs a QP endpoint")
        n_hosts = len(host_node)
        if len(self.queues) != NPRIO * len(self.ports):
            raise ValueError("queues: need 8 per port")
        # routes: an ethlink.topology.Routes (csrc/route.pxd)
        if len(routes.node_row) != len(self.nodes) or len(routes.host_class) != n_hosts:
            raise ValueError("routes: need a row per node and a class per host")
        if len(routes.table) != int((routes.node_row >= 0).sum()) * routes.n_classes:
            raise ValueError("routes.table: need rows x classes entries")
        self._host_node = np.ascontiguousarray(host_node, dtype=np.int32)
        self._node_row = np.ascontiguousarray(routes.node_row, dtype=np.int32)
        self._host_class = np.ascontiguousarray(routes.host_class, dtype=np.int32)
        # NOTE: a random entry per hop; as int16 (most fabrics) the k=16 fat-tree's is
        # 80 kB instead of 160 kB, and the 1024-host permutation 3 % faster
        self._route_set = np.ascontiguousarray(routes.table,
                                               dtype=np.int16 if len(routes.set_off) <= ROUTE_SET16_MAX else np.int32)
        if len(self._route_set) == 0:
            self._route_set = np.full(1, -1, dtype=self._route_set.dtype)
        self._host_down = _host_down(self.nodes, self.ports, self._host_node)
        self._route_off = np.ascontiguousarray(routes.set_off, dtype=np.int32)
        self._route_port = np.ascontiguousarray(routes.set_port, dtype=np.int32)
        if len(self._route_port) == 0:
            self._route_port = np.zeros(1, dtype=np.int32)
        self._ring_head = np.full(NPRIO * len(self.ports), -1, dtype=np.int32)
        self._ring_tail = np.full(NPRIO * len(self.ports), -1, dtype=np.int32)
        self._ring_mask = np.zeros(max(1, len(self.ports)), dtype=np.uint8)
        if dependents is None:
            dependents = [np.zeros(len(self.flows) + 1, dtype=np.int32), np.zeros(0, dtype=np.int32)]
        self._dep_off = np.ascontiguousarray(dependents[0], dtype=np.int32)
        self._dep_list = np.ascontiguousarray(dependents[1], dtype=np.int32)
        if len(self._dep_off) != len(self.flows) + 1:
            raise ValueError("dependents: offsets need n_flows + 1 entries")
        ready = np.nonzero(self.flows["deps_left"] == 0)[0]
        order = ready[np.argsort(self.flows["start_ps"][ready], kind="stable")]
        self._flow_order = order.astype(np.int32) if len(order) else np.zeros(1, dtype=np.int32)
        s.n_ordered = len(order)
        if len(self._dep_list) == 0:
            self._dep_list = np.zeros(1, dtype=np.int32)
        s.nodes = <Node*>cnp.PyArray_DATA(self.nodes)
        s.n_nodes = len(self.nodes)
        s.ports = <Port*>cnp.PyArray_DATA(self.ports)
        s.n_ports = len(self.ports)
        for i in range(s.n_ports):
            s.ports[i].peer_node = s.ports[s.ports[i].peer].node
            # (8e12 ps-bits per s: whole picoseconds per byte at every standard rate)
            s.ports[i].ps_per_byte = 0
            if s.ports[i].rate_bps > 0 and (8 * 1000000000000) % s.ports[i].rate_bps == 0:
                s.ports[i].ps_per_byte = (8 * 1000000000000) // s.ports[i].rate_bps
        s.queues = <Queue*>cnp.PyArray_DATA(self.queues)
        s.flows = <Flow*>cnp.PyArray_DATA(self.flows)
        s.n_flows = len(self.flows)
        s.qps = <Qp*>cnp.PyArray_DATA(self.qps)
        s.n_qps = len(self.qps)
        if ls_gpus is None:
            ls_gpus = np.zeros(n_hosts, dtype=LSGPU_DTYPE)
            ls_gpus["pend"] = -1
            ls_gpus["open_pi"] = -1
            ls_gpus["tags"] = 1
        if ls_ops is None:
            ls_ops = np.zeros(0, dtype=LSOP_DTYPE)
        self.ls_ops = _as(ls_ops, LSOP_DTYPE, "ls_ops")
        self.ls_gpus = _as(ls_gpus, LSGPU_DTYPE, "ls_gpus")
        if len(self.ls_gpus) != n_hosts:
            raise ValueError("ls_gpus: need one row per host")
        if len(self.ls_ops) == 0:
            self.ls_ops = np.zeros(1, dtype=LSOP_DTYPE)
            s.n_ls_ops = 0
        else:
            s.n_ls_ops = len(self.ls_ops)
        s.ls_ops = <LsOp*>cnp.PyArray_DATA(self.ls_ops)
        s.ls_gpus = <LsGpu*>cnp.PyArray_DATA(self.ls_gpus)
        s.ls_prio = ls_prio
        s.ls_header = ls_header
        s.ls_relaxed = ls_relaxed
        s.ls_coalesce_bytes = ls_coalesce_bytes
        s.ls_coalesce_wait_ps = ls_coalesce_wait_ps
        s.ls_target_ps = ls_target_ps
        s.ls_timeout_ps = ls_timeout_ps
        s.cbfc_mask = cbfc_mask
        s.cbfc_cell = cbfc_cell
        s.cbfc_update_cells = cbfc_update_cells
        # UET (csrc/uet.pxd): per-PSN state of every endpoint, slots given by build_qps
        n_slots = int((self.qps["uet_base"] + self.qps["uet_cap"]).max()) if len(self.qps) else 0
        self._uet_st = np.zeros(max(n_slots, 1), dtype=np.uint8)
        self._uet_sent = np.zeros(max(n_slots, 1), dtype=np.int64)
        s.uet_st = <uint8_t*>cnp.PyArray_DATA(self._uet_st)
        s.uet_sent_ps = <int64_t*>cnp.PyArray_DATA(self._uet_sent)
        s.uet_spray = uet_spray
        s.uet_trim = uet_trim
        s.uet_trim_bytes = uet_trim_bytes
        s.uet_trim_prio = uet_trim_prio
        s.uet_sack_bits = 64
        s.uet_rto_ps = uet_rto_ps
        s.uet_retry_limit = uet_retry_limit
        s.nscc = nscc
        s.nscc_rtt_ps = nscc_rtt_ps
        s.nscc_target_ps = nscc_target_ps
        s.nscc_qa_ps = nscc_qa_ps
        s.nscc_fast_ps = nscc_fast_ps
        s.nscc_period_ps = nscc_period_ps
        s.nscc_adjust_bytes = nscc_adjust_bytes
        s.nscc_alpha = nscc_alpha
        s.nscc_fi = nscc_fi
        s.nscc_eta = nscc_eta
        s.nscc_gamma = nscc_gamma
        s.nscc_delay_alpha = nscc_delay_alpha
        s.nscc_maxwnd_bdp = nscc_maxwnd_bdp
        s.ack_every = ack_every
        s.ack_prio = ack_prio
        s.cnp_prio = cnp_prio
        s.ecn_capable = ecn_capable
        s.rto_initial_ps = rto_initial_ps
        s.rto_max_ps = rto_max_ps
        s.retry_limit = retry_limit
        s.cnp_interval_ps = cnp_interval_ps
        s.dcqcn = dcqcn
        s.dc_f = dc_f
        s.dc_g = dc_g
        s.dc_alpha_ps = dc_alpha_ps
        s.dc_timer_ps = dc_timer_ps
        s.dc_bytes = dc_bytes
        s.dc_rai_bps = dc_rai_bps
        s.dc_rhai_bps = dc_rhai_bps
        s.dc_min_bps = dc_min_bps
        s.dc_min_dec = dc_min_dec
        s.rate_cap = 3 * 1024
        s.rate_log = <int64_t*>malloc(s.rate_cap * sizeof(int64_t))
        s.n_hosts = n_hosts
        s.host_node = <int32_t*>cnp.PyArray_DATA(self._host_node)
        s.node_row = <int32_t*>cnp.PyArray_DATA(self._node_row)
        s.host_class = <int32_t*>cnp.PyArray_DATA(self._host_class)
        s.host_down = <int32_t*>cnp.PyArray_DATA(self._host_down)
        s.n_classes = routes.n_classes
        s.route_set = s.route_set16 = NULL
        if self._route_set.dtype == np.int16:
            s.route_set16 = <int16_t*>cnp.PyArray_DATA(self._route_set)
        else:
            s.route_set = <int32_t*>cnp.PyArray_DATA(self._route_set)
        s.route_off = <int32_t*>cnp.PyArray_DATA(self._route_off)
        s.route_port = <int32_t*>cnp.PyArray_DATA(self._route_port)
        s.ring_head = <int32_t*>cnp.PyArray_DATA(self._ring_head)
        s.ring_tail = <int32_t*>cnp.PyArray_DATA(self._ring_tail)
        s.ring_mask = <uint8_t*>cnp.PyArray_DATA(self._ring_mask)
        s.flow_order = <int32_t*>cnp.PyArray_DATA(self._flow_order)
        s.dep_off = <int32_t*>cnp.PyArray_DATA(self._dep_off)
        s.dep_list = <int32_t*>cnp.PyArray_DATA(self._dep_list)
        s.seed = seed
        s.lossless_mask = lossless_mask
        s.llr_any = int(len(self.ports) > 0 and bool(self.ports["llr"].any()))
        s.ber_any = int(len(self.ports) > 0 and bool((self.ports["ber"] > 0).any()))
        s.pfc_quanta = pfc_quanta
        s.pfc_response_ps = pfc_response_ps
        s.pfc_alpha = pfc_alpha
        s.pfc_floor = pfc_floor
        s.wd_action = wd_action
        s.wd_detect_ps = wd_detect_ps
        s.wd_restore_ps = wd_restore_ps
        s.deadlock_check_ps = deadlock_check_ps
        s.deadlock_ps = -1
        for i in range(s.n_ports):
            s.ports[i].ctrl_head = -1
            s.ports[i].ctrl_tail = -1
            s.ports[i].replay_head = -1
            s.ports[i].replay_tail = -1
            s.ports[i].rx_tail = -1
            s.ports[i].crx_tail = -1
            s.ports[i].rng = mix64(seed ^ mix64(<uint64_t>i + 0x5EED)) | 1
        s.dwrr_quantum = dwrr_quantum
        s.ttl = ttl
        shift, slots = _wheel(self.ports, self.nodes, pfc_response_ps, evq_shift, evq_slots)
        s.pkt_cap = max(16, initial_packets)
        s.pkts = pkt_pool_alloc(s, s.pkt_cap)
        if evq_init(&s.evq, shift, slots) or s.pkts == NULL or s.rate_log == NULL:
            raise MemoryError()
        s.free_head = -1
        s.pkt_top = 0
        if hpcc:
            # HPCC (csrc/hpcc.pxd): INT records per packet and each QP's previous ACK's
            if hp_t_ps <= 0 or hp_w_init <= 0 or hp_w_floor <= 0:
                raise ValueError("hpcc: hp_t_ps, hp_w_init and hp_w_floor must be positive")
            s.hpcc = 1
            s.hp_eta = hp_eta
            s.hp_max_stage = hp_max_stage
            s.hp_t_ps = hp_t_ps
            s.hp_w_init = hp_w_init
            s.hp_w_ai = hp_w_ai
            s.hp_w_floor = hp_w_floor
            s.hp_int = <IntStack*>calloc(s.pkt_cap, sizeof(IntStack))
            s.hp_prev = <IntStack*>calloc(max(1, s.n_qps), sizeof(IntStack))
            if s.hp_int == NULL or s.hp_prev == NULL:
                raise MemoryError()
            for i in range(s.n_qps):
                s.qps[i].hp_w = hp_w_init
                s.qps[i].hp_wc = hp_w_init
                s.qps[i].hp_w_min = hp_w_init
                s.qps[i].hp_u = 1.0             # ns-3 rdma-queue-pair.cc: hp.u = 1
        s.trace_level = trace_level
        # The loop drains the ring before an event could overfill it (the ring grows if one
        # does): a coalesced Load/Store frame completes (or answers) every transaction it
        # carries in one event: per transaction a completion (or txn) row, and the issue,
        # txn and enqueue rows of the operation its freed tag lets start.
        s.trace_margin = TRACE_MARGIN + 4 * (ls_coalesce_bytes // 16 + 1)
        if trace_level != TRACE_OFF:
            s.trace_batch = max(trace_capacity, 4 * s.trace_margin)
            s.trace_cap = s.trace_batch
            s.trace = <TraceRec*>malloc(s.trace_cap * sizeof(TraceRec))
            if s.trace == NULL:
                raise MemoryError()

    def __dealloc__(self):
        evq_free(&self.s.evq)
        ethlink_pool_free(self.s.pkts, self.s.pkt_cap * sizeof(Packet), self.s.pool)
        free(self.s.rate_log)
        free(self.s.trace)
        free(self.s.dl_cycle)
        free(self.s.hp_int)
        free(self.s.hp_prev)

    def run(self, int64_t until_ps=9223372036854775807, int64_t max_events=9223372036854775807):
        """Process events up to `until_ps` (inclusive) or `max_events`, whichever first;
        returns the stop reason's name (STOP_NAMES)."""
        cdef int rc
        cdef int32_t i
        if not self.started:
            # The first flow start is the first event; constructing schedules nothing.
            self.started = True
            schedule_next_flow(&self.s)
            for i in range(self.s.n_hosts):
                if self.s.ls_gpus[i].pend >= 0:
                    ls_try_issue(&self.s, i)
        with nogil:
            rc = run_loop(&self.s, until_ps, max_events)
        if rc == STOP_ERROR:
            raise MemoryError(f"engine stopped: {ERROR_NAMES.get(self.s.error, self.s.error)}")
        return STOP_NAMES[rc]

    def deadlock_cycle(self):
        """The queue indices (port * 8 + priority) of the deadlock cycle found, in wait-for
        order (each waits for the next, the last for the first); empty if none."""
        return [self.s.dl_cycle[i] for i in range(self.s.dl_cycle_n)]

    def data_in_flight(self):
        """(frames, payload bytes) of flow data frames (raw, RoCE data and READ responses;
        not Load/Store, not control frames) still queued or on a wire: a walk of the pool.
        NOTE: the free list is a pointer chase in no order (68 ms after the 1024-host
        RoCE permutation, 5 % of its whole run); a run that ended with every frame
        delivered or dropped has none to find."""
        cdef Sim* s = &self.s
        cdef int32_t i
        cdef int64_t n = 0, nbytes = 0
        if s.pkts_live == 0:
            return 0, 0
        free_mark = np.zeros(s.pkt_cap, dtype=np.uint8)
        cdef uint8_t[::1] free_ = free_mark
        i = s.free_head
        while i >= 0:
            free_[i] = 1
            i = s.pkts[i].next
        for i in range(s.pkt_top):
            if not free_[i] and s.pkts[i].payload > 0 and not (s.pkts[i].flags & PF_LS) \
                    and (s.pkts[i].kind == FK_RAW or s.pkts[i].kind == FK_ROCE or s.pkts[i].kind == FK_UET):
                n += 1
                nbytes += s.pkts[i].payload
        return n, nbytes

    def rate_samples(self):
        """DCQCN (or HPCC) rate changes so far: an (n, 3) int64 array of (time_ps, qp, rate_bps)."""
        cdef int64_t[::1] view
        out = np.empty(self.s.rate_n, dtype=np.int64)
        view = out
        for i in range(self.s.rate_n):
            view[i] = self.s.rate_log[i]
        return out.reshape(-1, 3)

    def take_trace(self):
        """The trace records written since the last call (a copy), and reset the ring."""
        cdef cnp.ndarray out
        if self.s.trace == NULL:
            return np.zeros(0, dtype=TRACE_DTYPE)
        # NOTE: one memcpy; numpy's own copy of a structured array goes field by field
        # and is ~60x slower.
        out = np.empty(self.s.trace_n, dtype=TRACE_DTYPE)
        memcpy(cnp.PyArray_DATA(out), self.s.trace, self.s.trace_n * sizeof(TraceRec))
        self.s.trace_n = 0
        return out

    @property
    def now(self):
        return self.s.now

    @property
    def active_ps(self):
        """Time of the last frame event or flow/operation start (summary.json's
        sim_time_ps); `now` runs on through timers that fire after it."""
        return self.s.t_active

    @property
    def events(self):
        return self.s.events

    @property
    def pending_events(self):
        return self.s.evq.n

    @property
    def next_event_ps(self):
        cdef int err = 0
        cdef Event* top = evq_top(&self.s.evq, &err)
        if err:
            raise MemoryError("engine: event queue")
        return top.time if top != NULL else -1

    @property
    def route_set_dtype(self):
        """The route table's entry type: int16, or int32 past ROUTE_SET16_MAX sets."""
        return self._route_set.dtype

    def counters(self):
        """Whole-run counters as a dict of ints."""
        s = &self.s
        return {
            "events": s.events,
            "sim_time_ps": s.t_active,
            "bytes_sent": s.bytes_sent,
            "bytes_delivered": s.bytes_delivered,
            "bytes_dropped": s.bytes_dropped,
            "packets_sent": s.pkts_sent,
            "packets_delivered": s.pkts_delivered,
            "packets_dropped": s.pkts_dropped,
            "packets_in_flight": s.pkts_live,
            "packets_in_flight_max": s.pkts_live_hwm,
            "packet_hops": s.hops,
            "flows_done": s.flows_done,
            "ecn_marked": s.ecn_marked,
            "packets_discarded": s.pkts_discarded,
            "retransmitted_packets": s.retx_pkts,
            "timeouts": s.timeouts,
            "spurious_retransmissions": s.spurious,
            "bytes_retransmitted": s.bytes_retx,
            "bytes_discarded": s.bytes_discarded,
            "bytes_dropped_flow": s.bytes_dropped_flow,
            "qp_errors": s.qp_errors,
            "cnps": s.cnps,
            "naks": s.naks,
            "data_frames_tx": s.data_tx,
            "deadlock_ps": s.deadlock_ps,
            "lossless_drops": s.lossless_drops,
            "watchdog_storms": s.storms,
            "ls_frames": s.ls_frames,
            "ls_wire_bytes": s.ls_wire_bytes,
            "ls_payload_bytes": s.ls_payload_bytes,
            "ls_retries": s.ls_retries,
            "llr_replays": s.llr_replays,
            "fcs_drops": s.fcs_drops,
            "cbfc_updates": s.cbfc_updates,
            "hpcc_int_records": s.hp_records,
            "hpcc_int_bytes": s.hp_int_bytes,
            "uet_trimmed": s.uet_trimmed,
            "uet_trimmed_bytes": s.uet_trimmed_bytes,
            "uet_nacks": s.uet_nacks,
            "uet_sacks": s.uet_sacks,
            "uet_acks": s.uet_acks,
            "uet_selective_retransmissions": s.uet_sel_retx,
            "nscc_quick_adapts": s.nscc_qa_total,
            "nscc_decreases": s.nscc_md_total,
            "drops_by_reason": [s.drops[i] for i in range(DROP_REASON_COUNT)],
            "heap_capacity": s.evq.cur_cap + s.evq.far_cap,
            "events_pending_max": s.evq.cap_hwm,
            "wheel_slots": s.evq.nslots,
            "wheel_bucket_ps": 1 << s.evq.shift,
            "pool_capacity": s.pkt_cap,
        }


def hpcc_sender(acks, *, double eta, int32_t max_stage, int64_t t_ps, int64_t w_init,
                int64_t w_ai, int64_t w_floor, int64_t line_bps, int32_t mtu=4096):
    """Feed csrc/hpcc.pxd's sender update (hp_on_ack) a synthetic sequence of ACKs of one
    QP, outside any fabric: `acks` is a sequence of (psn, snd_nxt, records) with records a
    list of (ts_ps, tx_bytes, qlen, rate_bps), one per hop. Returns, after each ACK, the
    dict of the QP's HPCC state: w, wc, u, stage, last_psn, rate_bps."""
    cdef Sim s
    cdef Qp q
    cdef Packet pk
    cdef IntStack ints, prev
    cdef int32_t h
    memset(&s, 0, sizeof(Sim))
    memset(&q, 0, sizeof(Qp))
    memset(&pk, 0, sizeof(Packet))
    memset(&ints, 0, sizeof(IntStack))
    memset(&prev, 0, sizeof(IntStack))
    s.qps, s.n_qps, s.pkts, s.pkt_cap = &q, 1, &pk, 1
    s.hp_int, s.hp_prev = &ints, &prev
    s.hpcc, s.hp_eta, s.hp_max_stage, s.hp_t_ps = 1, eta, max_stage, t_ps
    s.hp_w_init, s.hp_w_ai, s.hp_w_floor = w_init, w_ai, w_floor
    s.rate_cap = 3 * 64
    s.rate_log = <int64_t*>malloc(s.rate_cap * sizeof(int64_t))
    if s.rate_log == NULL:
        raise MemoryError()
    q.line_bps = q.rate_bps = line_bps
    q.mtu = mtu
    q.hp_w = q.hp_wc = q.hp_w_min = w_init
    q.hp_u = 1.0
    out = []
    try:
        for psn, snd_nxt, records in acks:
            if len(records) > INT_MAX_HOPS:
                raise ValueError(f"at most {INT_MAX_HOPS} records per ACK")
            pk.psn = psn
            pk.flags = PF_INT
            q.snd_nxt = snd_nxt
            ints.n = len(records)
            for h, (ts, txb, ql, rate) in enumerate(records):
                ints.hop[h].ts_ps, ints.hop[h].tx_bytes, ints.hop[h].qlen, ints.hop[h].rate_bps = ts, txb, ql, rate
            hp_on_ack(&s, 0, 0)
            out.append({"w": q.hp_w, "wc": q.hp_wc, "u": q.hp_u, "stage": q.hp_stage,
                        "last_psn": q.hp_last_psn, "rate_bps": q.rate_bps})
    finally:
        free(s.rate_log)
    return out


# ---------------------------------------------------------------------------------------
# Trace records -> columns.

# trace_columns below copies TraceRec's fields by position: 4 int64, 10 int32, 8 uint8.
if tuple(TRACE_DTYPE.fields[n][0].itemsize for n in TRACE_DTYPE.names) != (8,) * 4 + (4,) * 10 + (1,) * 8:
    raise ImportError("csrc/core.pxd TraceRec changed its field layout; update trace_columns")


def trace_columns(cnp.ndarray recs):
    """The fields of trace records (a contiguous TRACE_DTYPE array) as one contiguous
    numpy array each, in TraceRec order: one pass over the records without the GIL, so
    Arrow can wrap each column without another copy."""
    cdef Py_ssize_t i, n
    cdef const TraceRec* r
    cdef int64_t* c64[4]
    cdef int32_t* c32[10]
    cdef uint8_t* c8[8]
    if recs.dtype != TRACE_DTYPE or not recs.flags.c_contiguous:
        raise TypeError(f"trace_columns: expected a contiguous array of dtype {TRACE_DTYPE}, "
                        f"got {recs.dtype}")
    n = recs.shape[0]
    cols = [np.empty(n, dtype=recs.dtype.fields[name][0]) for name in recs.dtype.names]
    for i in range(4):
        c64[i] = <int64_t*>cnp.PyArray_DATA(cols[i])
    for i in range(10):
        c32[i] = <int32_t*>cnp.PyArray_DATA(cols[4 + i])
    for i in range(8):
        c8[i] = <uint8_t*>cnp.PyArray_DATA(cols[14 + i])
    r = <const TraceRec*>cnp.PyArray_DATA(recs)
    with nogil:
        for i in range(n):
            c64[0][i] = r[i].time_ps
            c64[1][i] = r[i].pkt
            c64[2][i] = r[i].qbytes
            c64[3][i] = r[i].addr
            c32[0][i] = r[i].node
            c32[1][i] = r[i].port
            c32[2][i] = r[i].flow
            c32[3][i] = r[i].src
            c32[4][i] = r[i].dst
            c32[5][i] = r[i].size
            c32[6][i] = r[i].payload
            c32[7][i] = r[i].psn
            c32[8][i] = r[i].qp
            c32[9][i] = r[i].ntx
            c8[0][i] = r[i].event
            c8[1][i] = r[i].kind
            c8[2][i] = r[i].prio
            c8[3][i] = r[i].ecn
            c8[4][i] = r[i].reason
            c8[5][i] = r[i].opcode
            c8[6][i] = r[i].flags
            c8[7][i] = r[i].syndrome
    return cols


def event_queue_rank_supported():
    """Whether the event queue rank-sorts its small buckets on this CPU (csrc/evq.h)."""
    return bool(evq_rank_supported())


def event_queue_ops(ops, int shift, int64_t slots, rank=None):
    """Drive csrc/evq.h directly, outside any fabric (a test hook): `ops` is a sequence
    of (op, time, seq) with op 0 = add an event at (time, seq), 1 = pop the earliest, 2 =
    peek at it (which may move the wheel on). Returns the (time, seq) of every pop and
    peek, in order, with (-1, -1) when the queue was empty. Added times must not be before
    the last one popped, as in the engine. `rank`: sort small buckets by rank (True, where
    `event_queue_rank_supported()`) or by quicksort (False); None, as the engine does."""
    cdef EvQueue q
    cdef Event ev
    cdef Event* top
    cdef int err = 0
    if slots < 64 or slots & (slots - 1) or shift < 0 or shift > 62:
        raise ValueError("slots: a power of 2, at least 64; shift: 0 to 62")
    if rank and not evq_rank_supported():
        raise ValueError("rank: this CPU cannot rank-sort (no AVX2 on x86-64)")
    if evq_init(&q, shift, slots):
        raise MemoryError()
    if rank is not None:
        q.rank = 1 if rank else 0
    out = []
    try:
        for op, time, seq in ops:
            if op == 0:
                ev.time, ev.seq, ev.kind, ev.obj, ev.arg = time, seq, 0, 0, seq
                if evq_push(&q, &ev):
                    raise MemoryError()
                continue
            top = evq_top(&q, &err)
            if err:
                raise MemoryError()
            if top == NULL:
                out.append((-1, -1))
            elif op == 1:
                evq_pop(&q, &ev)
                if ev.arg != ev.seq:
                    raise AssertionError("event payload moved apart from its key")
                out.append((ev.time, ev.seq))
            else:
                out.append((top.time, top.seq))
    finally:
        evq_free(&q)
    return out
