# Priority-based flow control (IEEE 802.1Qbb), the switch buffer it protects, its
# watchdog, and deadlock detection.
#
# Buffer (as SONiC's buffer model and switch ASICs lay it out: sonic-net/SONiC
# doc/qos/dynamically-headroom-calculation.md, "Shared headroom pool design"): a switch's
# buffer is a shared pool plus a headroom pool for the lossless priority groups (PG = an
# ingress port and a lossless priority). Every frame is charged to the shared pool, except a
# lossless frame that finds its PG at XOFF (or the shared pool full): that one is charged to
# the headroom pool, up to its PG's headroom (`Queue.headroom`: what can still arrive after
# XOFF, computed per port by ethlink.sim from rate, cable delay, MTU and response time).
# The pools are counters: a departing frame frees its PG's headroom first. By
# default the headroom pool reserves every PG's headroom in full (compile refuses a buffer
# that cannot hold it), so a lossless frame is never dropped; a smaller pool
# (`pfc.headroom_pool`) is an explicit opt-in, and a frame it cannot hold is dropped as
# DR_HEADROOM, a headroom violation.
#
# Ingress side (switches): a PG's bytes are counted from admission until the frame starts
# leaving. XOFF: a PG's shared-pool bytes reach XOFF (static bytes, or alpha x free shared
# pool when dynamic, never below xon_offset + one maximum frame) or one of its frames goes
# to headroom: a real PFC frame is queued out of that ingress port towards the upstream
# sender: a 64 B MAC Control frame, opcode 0x0101, class-enable vector with one bit, pause
# time `pfc_quanta` (802.1Qbb clause 36.1.3). XON (pause time 0) when the PG holds nothing
# in headroom and its bytes fall to XOFF - xon_offset (>= 0): evaluated whenever the PG's
# bytes fall, and at every refresh (every half pause time while XOFF is in force, at least
# one maximum frame's wire time apart), so with
# the floor on XOFF a PG that drains always resumes its sender.
#
# Egress side (switches and NICs): a received pause stops the queue of that priority from
# starting new frames for quanta x 512 bit times at the link rate (the frame on the wire
# finishes); pause time 0 resumes at once. The pause takes effect `pfc_response_ps` after
# the frame's last bit arrives. Pause frames use the port's control FIFO, ahead of data.
#
# Watchdog (as in SONiC and Juniper PFC watchdogs): a queue continuously paused with
# frames waiting for `wd_detect_ps` is declared stormed; for `wd_restore_ps` it then either
# ignores pauses (action ignore) or drops its frames and arrivals (action drop).
#
# Deadlock (a cyclic buffer dependency): every `deadlock_check_ps` the check builds a
# wait-for graph over *stuck* egress queues (paused by a peer PG whose XOFF is still in
# force, non-empty, with the same head frame as at the previous check). Queue E waits for
# queue E' when E' sits in the switch at E's far end and holds a frame that arrived through
# E's link (E's pause lifts only when that PG drains, through E'). A cycle in this graph is
# a deadlock: the loop stops with STOP_DEADLOCK and the cycle's queues are kept
# (Sim.dl_cycle). A slow or idle fabric has no cycle and is never reported.
#
# Limits: hosts never send PFC (a NIC drains at line rate, its receive buffer is not
# modelled); one priority per pause frame; the dynamic XON level moves with the free shared
# pool but is re-read only when the PG's own bytes change or at a refresh; a deadlock is
# reported one to two check periods after it forms.
from libc.stdlib cimport malloc, free
from core cimport *
from port cimport ctrl_push, q_pop

cdef enum:
    PFC_FRAME_BYTES = 64
    QUANTUM_BYTES = 64          # one pause quantum = 512 bit times (802.1Qbb 36.1.3.3)
    WD_OFF = 0
    WD_DROP = 1
    WD_IGNORE = 2


cdef inline int64_t pause_ps(int64_t quanta, int64_t rate_bps) noexcept nogil:
    return ser_ps(quanta * QUANTUM_BYTES, rate_bps)


cdef inline void pfc_send(Sim* s, int32_t port, int32_t prio, int32_t quanta) noexcept nogil:
    cdef Port* pt = &s.ports[port]
    cdef int32_t pi = pkt_alloc(s)
    cdef Packet* pk
    if pi < 0:
        return
    pk = &s.pkts[pi]
    pk.kind = FK_PFC
    pk.size = PFC_FRAME_BYTES
    pk.payload = 0
    pk.flow = -1
    pk.src = pt.node
    pk.dst = pt.peer_node
    pk.prio = <uint8_t>prio
    pk.opcode = <uint8_t>(1 << prio)      # class-enable vector
    pk.psn = quanta                       # pause time of the enabled class, quanta
    ctrl_push(s, pt, pi)
    pt.pause_tx += 1
    trace_pkt(s, TE_PAUSE_TX, pt.node, port, pi, s.queues[port * NPRIO + prio].ing_bytes, DR_NONE)
    kick(s, port)


cdef inline int64_t pfc_xoff(Sim* s, Node* nd, Queue* q) noexcept nogil:
    # Shared-pool bytes the PG may hold before XOFF: static, or alpha x free shared pool;
    # never below xon_offset + pfc_floor, so the XON level is at least one frame above 0.
    cdef int64_t x, floor
    if q.xoff > 0:
        return q.xoff
    x = <int64_t>(s.pfc_alpha * <double>(nd.shared_bytes - nd.shared_used))
    floor = q.xon_offset + s.pfc_floor
    return x if x > floor else floor


cdef inline int64_t pfc_xon(Sim* s, Node* nd, Queue* q) noexcept nogil:
    # XON when the PG's bytes fall to this level (hysteresis, never below zero).
    cdef int64_t x = pfc_xoff(s, nd, q) - q.xon_offset
    return x if x > 0 else 0


cdef inline uint8_t pfc_admit(Sim* s, Node* nd, Packet* pk, bint* to_hdrm) noexcept nogil:
    # Admission of a lossless (PFC) frame: to the shared pool while its PG is under XOFF
    # and the pool has room, else to the headroom pool within the PG's headroom; sets
    # to_hdrm to the pool it is charged to.
    cdef Queue* iq = &s.queues[pk.in_port * NPRIO + pk.prio]
    to_hdrm[0] = 0
    if (iq.ing_bytes - iq.hdrm_bytes + pk.size <= pfc_xoff(s, nd, iq)
            and nd.shared_used + pk.size <= nd.shared_bytes):
        return DR_NONE
    if iq.hdrm_bytes + pk.size <= iq.headroom and nd.hdrm_used + pk.size <= nd.hdrm_pool:
        to_hdrm[0] = 1
        return DR_NONE
    return DR_HEADROOM


cdef inline void pfc_arm_refresh(Sim* s, int32_t qi) noexcept nogil:
    # Refresh at half the pause time, but not more often than one maximum frame's wire
    # time: a tiny pfc.quanta (warned about at compile) would otherwise refresh every few
    # ns, an event storm that carries no information.
    cdef int32_t port = qi // NPRIO
    cdef int64_t half = pause_ps(s.pfc_quanta, s.ports[port].rate_bps) // 2
    cdef int64_t frame = ser_ps(s.pfc_floor + WIRE_EXTRA_BYTES, s.ports[port].rate_bps)
    s.queues[qi].pause_gen += 1
    schedule(s, s.now + (half if half > frame else frame), EV_PFC_REFRESH, qi, s.queues[qi].pause_gen)


cdef inline void pfc_on_admit(Sim* s, Node* nd, Packet* pk, bint to_hdrm) noexcept nogil:
    # The frame was admitted to the pool pfc_admit chose: count it, and send XOFF when the
    # PG reached XOFF or had to use headroom.
    cdef int32_t qi = pk.in_port * NPRIO + pk.prio
    cdef Queue* iq = &s.queues[qi]
    iq.ing_bytes += pk.size
    if to_hdrm:
        iq.hdrm_bytes += pk.size
        nd.hdrm_used += pk.size
        if iq.hdrm_bytes > iq.hdrm_hwm:
            iq.hdrm_hwm = iq.hdrm_bytes
        if nd.hdrm_used > nd.hdrm_hwm:
            nd.hdrm_hwm = nd.hdrm_used
    else:
        nd.shared_used += pk.size
    if not iq.pause_sent and (to_hdrm or iq.ing_bytes - iq.hdrm_bytes >= pfc_xoff(s, nd, iq)):
        iq.pause_sent = 1
        iq.pause_level = iq.ing_bytes
        iq.pauses_sent += 1
        pfc_send(s, pk.in_port, pk.prio, s.pfc_quanta)
        pfc_arm_refresh(s, qi)


cdef inline void pfc_try_xon(Sim* s, Node* nd, int32_t qi) noexcept nogil:
    cdef Queue* iq = &s.queues[qi]
    if iq.pause_sent and iq.hdrm_bytes == 0 and iq.ing_bytes <= pfc_xon(s, nd, iq):
        iq.pause_sent = 0
        iq.pause_gen += 1                 # stops the refresh chain
        pfc_send(s, qi // NPRIO, qi % NPRIO, 0)


cdef inline void pfc_on_depart(Sim* s, Node* nd, Packet* pk) noexcept nogil:
    # The frame leaves the switch (starts on its egress link, or is dropped from a queue).
    # The pools are counters, not places: a departure frees the PG's headroom first (as
    # switch MMUs and HPCC's ns-3 SwitchMmu account it), so headroom is whole again before
    # the PG resumes its sender.
    cdef int32_t qi = pk.in_port * NPRIO + pk.prio
    cdef Queue* iq = &s.queues[qi]
    cdef int64_t from_hdrm = iq.hdrm_bytes if iq.hdrm_bytes < pk.size else pk.size
    iq.ing_bytes -= pk.size
    iq.hdrm_bytes -= from_hdrm
    nd.hdrm_used -= from_hdrm
    nd.shared_used -= pk.size - from_hdrm
    pfc_try_xon(s, nd, qi)


cdef inline void pfc_refresh(Sim* s, int32_t qi, int64_t gen) noexcept nogil:
    # Half a pause time after the last XOFF: resume if the PG has drained enough (the
    # dynamic XON level may have risen since), else send XOFF again.
    cdef Queue* iq = &s.queues[qi]
    cdef int32_t port = qi // NPRIO
    if not iq.pause_sent or iq.pause_gen != gen:
        return
    pfc_try_xon(s, &s.nodes[s.ports[port].node], qi)
    if iq.pause_sent:
        iq.pauses_sent += 1
        pfc_send(s, port, qi % NPRIO, s.pfc_quanta)
        pfc_arm_refresh(s, qi)


cdef inline void pause_close(Sim* s, Queue* q, int64_t end) noexcept nogil:
    if q.pause_start >= 0:
        q.paused_ps += end - q.pause_start
        q.pause_start = -1
    q.pause_since = -1


cdef inline void pfc_rx(Sim* s, int32_t port, int32_t pi) noexcept nogil:
    # A pause frame arrived on `port`: pause (or resume) that port's egress queue.
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t prio = pk.prio
    cdef int32_t qi = port * NPRIO + prio
    cdef Queue* q = &s.queues[qi]
    cdef int64_t until
    s.ports[port].pause_rx += 1
    trace_pkt(s, TE_PAUSE_RX, s.ports[port].node, port, pi, q.bytes, DR_NONE)
    if pk.psn == 0:
        if q.paused_until > s.now:
            q.paused_until = s.now
        pause_close(s, q, s.now)
        kick(s, port)
    else:
        until = s.now + pause_ps(pk.psn, s.ports[port].rate_bps)
        if q.pause_start < 0:
            q.pause_start = s.now
        if q.pause_since < 0:
            q.pause_since = s.now
            if s.wd_action != WD_OFF:
                schedule(s, s.now + s.wd_detect_ps, EV_WATCHDOG, qi, 0)
        q.paused_until = until
        schedule(s, until, EV_PAUSE_END, qi, 0)
    pkt_free(s, pi)


cdef inline void pause_end(Sim* s, int32_t qi) noexcept nogil:
    # The pause timer ran out (a refresh may have extended it: then nothing to do).
    cdef Queue* q = &s.queues[qi]
    if q.paused_until <= s.now and q.pause_start >= 0:
        pause_close(s, q, q.paused_until)
        kick(s, qi // NPRIO)


cdef inline bint pfc_blocked(Sim* s, int32_t qi) noexcept nogil:
    # An egress queue that cannot start a frame because of a pause its peer keeps up.
    cdef Queue* q = &s.queues[qi]
    cdef int32_t port = qi // NPRIO
    return (q.head >= 0 and q.paused_until > s.now and q.wd_until <= s.now
            and s.queues[s.ports[port].peer * NPRIO + qi % NPRIO].pause_sent)


cdef inline int32_t pfc_find_cycle(Sim* s) noexcept nogil:
    # The wait-for graph of the module header over stuck queues; stores a cycle in
    # s.dl_cycle and returns its length (0: none, -1: out of memory).
    cdef int32_t n = s.n_ports * NPRIO, qi, prio, e, pi, src, i, j, m = 0, top, v, w
    cdef int32_t* stuck = NULL          # 1 if stuck
    cdef int32_t* mark = NULL           # last successor an edge into this queue was added for
    cdef int32_t* deg = NULL            # CSR offsets of successors (n + 1)
    cdef int32_t* succ = NULL
    cdef int32_t* color = NULL          # DFS: 0 new, 1 on the stack, 2 done
    cdef int32_t* it = NULL
    cdef int32_t* stack = NULL
    cdef int32_t found = 0, nodes_first, cnt
    cdef Queue* q
    stuck = <int32_t*>malloc(n * sizeof(int32_t))
    mark = <int32_t*>malloc(n * sizeof(int32_t))
    deg = <int32_t*>malloc((n + 1) * sizeof(int32_t))
    if stuck == NULL or mark == NULL or deg == NULL:
        free(stuck); free(mark); free(deg)
        return -1
    cnt = 0
    for qi in range(n):
        stuck[qi] = 0
        mark[qi] = -1
        deg[qi] = 0
        if not (s.lossless_mask & (1 << (qi % NPRIO))):
            continue
        q = &s.queues[qi]
        if pfc_blocked(s, qi):
            if q.dl_head == s.pkts[q.head].uid:
                stuck[qi] = 1
                cnt += 1
            q.dl_head = s.pkts[q.head].uid
        else:
            q.dl_head = -1
    deg[n] = 0
    if cnt < 2:
        free(stuck); free(mark); free(deg)
        return 0
    # Edges E -> E': E' stuck at a switch, holding a frame that arrived on port r at its
    # priority; E = the queue at r's peer for that priority. Counted, then filled (CSR).
    for j in range(2):
        for qi in range(n):
            mark[qi] = -1
        for e in range(n):
            if not stuck[e] or s.nodes[s.ports[e // NPRIO].node].kind != NODE_SWITCH:
                continue
            prio = e % NPRIO
            pi = s.queues[e].head
            while pi >= 0:
                if s.pkts[pi].in_port >= 0:
                    src = s.ports[s.pkts[pi].in_port].peer * NPRIO + prio
                    if stuck[src] and mark[src] != e:
                        mark[src] = e
                        if j == 0:
                            deg[src] += 1
                        else:
                            succ[it[src]] = e
                            it[src] += 1
                pi = s.pkts[pi].next
        if j == 0:
            m = 0
            for qi in range(n):          # counts -> offsets
                v = deg[qi]
                deg[qi] = m
                m += v
            deg[n] = m
            succ = <int32_t*>malloc((m + 1) * sizeof(int32_t))
            it = <int32_t*>malloc(n * sizeof(int32_t))
            if succ == NULL or it == NULL:
                free(stuck); free(mark); free(deg); free(succ); free(it)
                return -1
            for qi in range(n):
                it[qi] = deg[qi]
    # Depth-first search for a back edge; `it` becomes each node's next successor.
    color = mark                        # reuse: 0 new, 1 on stack, 2 done
    stack = <int32_t*>malloc(n * sizeof(int32_t))
    if stack == NULL:
        free(stuck); free(mark); free(deg); free(succ); free(it)
        return -1
    for qi in range(n):
        color[qi] = 2 if not stuck[qi] else 0
        it[qi] = deg[qi]
    for nodes_first in range(n):
        if color[nodes_first] != 0 or found:
            continue
        top = 0
        stack[0] = nodes_first
        color[nodes_first] = 1
        while top >= 0 and not found:
            v = stack[top]
            if it[v] < deg[v + 1]:
                w = succ[it[v]]
                it[v] += 1
                if color[w] == 0:
                    color[w] = 1
                    top += 1
                    stack[top] = w
                elif color[w] == 1:
                    # back edge v -> w: the cycle is stack[w's place .. top]
                    i = top
                    while stack[i] != w:
                        i -= 1
                    found = top - i + 1
                    free(s.dl_cycle)
                    s.dl_cycle = <int32_t*>malloc(found * sizeof(int32_t))
                    if s.dl_cycle == NULL:
                        found = -1
                    else:
                        for j in range(found):
                            s.dl_cycle[j] = stack[i + j]
                        s.dl_cycle_n = found
            else:
                color[v] = 2
                top -= 1
    free(stuck); free(mark); free(deg); free(succ); free(it); free(stack)
    return found
