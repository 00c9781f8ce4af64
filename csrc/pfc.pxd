# Priority-based flow control (IEEE 802.1Qbb), its watchdog, and deadlock detection.
#
# What it models. Ingress side (switches): bytes in the shared buffer are counted per
# (ingress port, priority) from admission until the frame starts leaving. Crossing XOFF
# (static bytes, or pfc_alpha x free buffer when dynamic) queues a real PFC frame out of
# that ingress port towards the upstream sender: a 64 B MAC Control frame, opcode 0x0101,
# class-enable vector with one bit, pause time `pfc_quanta` (802.1Qbb clause 36.1.3).
# While still above XON the pause is refreshed at half its duration; falling to
# XOFF - xon_offset sends pause time 0 (XON). A lossless frame arriving beyond XOFF +
# headroom (counted from the level at which XOFF was sent) is dropped (DR_HEADROOM): the
# headroom was too small for the bytes in flight when the pause took effect.
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
# Deadlock detection: every `deadlock_check_ps`, if no data frame started on any link
# since the previous check while packets are still held, the fabric is deadlocked
# (a cyclic buffer dependency); the loop stops with STOP_DEADLOCK and the time is kept.
#
# Limits: hosts never send PFC (a NIC drains at line rate, its receive buffer is not
# modelled); one priority per pause frame; lossy traffic may use headroom bytes.
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
    pk.dst = s.ports[pt.peer].node
    pk.prio = <uint8_t>prio
    pk.opcode = <uint8_t>(1 << prio)      # class-enable vector
    pk.psn = quanta                       # pause time of the enabled class, quanta
    ctrl_push(s, pt, pi)
    pt.pause_tx += 1
    trace_pkt(s, TE_PAUSE_TX, pt.node, port, pi, s.queues[port * NPRIO + prio].ing_bytes, DR_NONE)
    kick(s, port)


cdef inline int64_t pfc_xoff(Sim* s, Node* nd, Queue* q) noexcept nogil:
    if q.xoff > 0:
        return q.xoff
    return <int64_t>(s.pfc_alpha * <double>(nd.buffer_bytes - nd.buffer_used))


cdef inline uint8_t pfc_admit(Sim* s, Node* nd, int32_t in_port, int32_t prio, int32_t size) noexcept nogil:
    # Admission of a lossless frame: only the buffer itself and the headroom bound it.
    cdef Queue* iq = &s.queues[in_port * NPRIO + prio]
    if nd.buffer_used + size > nd.buffer_bytes:
        return DR_BUFFER_FULL
    if iq.pause_sent and iq.ing_bytes + size > iq.pause_level + iq.headroom:
        return DR_HEADROOM
    return DR_NONE


cdef inline void pfc_arm_refresh(Sim* s, int32_t qi) noexcept nogil:
    cdef int32_t port = qi // NPRIO
    s.queues[qi].pause_gen += 1
    schedule(s, s.now + pause_ps(s.pfc_quanta, s.ports[port].rate_bps) // 2,
             EV_PFC_REFRESH, qi, s.queues[qi].pause_gen)


cdef inline void pfc_on_admit(Sim* s, Node* nd, int32_t in_port, int32_t prio, int32_t size) noexcept nogil:
    cdef int32_t qi = in_port * NPRIO + prio
    cdef Queue* iq = &s.queues[qi]
    iq.ing_bytes += size
    if not iq.pause_sent and iq.ing_bytes >= pfc_xoff(s, nd, iq):
        iq.pause_sent = 1
        iq.pause_level = iq.ing_bytes
        iq.pauses_sent += 1
        pfc_send(s, in_port, prio, s.pfc_quanta)
        pfc_arm_refresh(s, qi)


cdef inline void pfc_on_depart(Sim* s, Node* nd, int32_t in_port, int32_t prio, int32_t size) noexcept nogil:
    cdef int32_t qi = in_port * NPRIO + prio
    cdef Queue* iq = &s.queues[qi]
    iq.ing_bytes -= size
    if iq.pause_sent and iq.ing_bytes <= pfc_xoff(s, nd, iq) - iq.xon_offset:
        iq.pause_sent = 0
        iq.pause_gen += 1                 # stops the refresh chain
        pfc_send(s, in_port, prio, 0)


cdef inline void pfc_refresh(Sim* s, int32_t qi, int64_t gen) noexcept nogil:
    cdef Queue* iq = &s.queues[qi]
    if iq.pause_sent and iq.pause_gen == gen:
        iq.pauses_sent += 1
        pfc_send(s, qi // NPRIO, qi % NPRIO, s.pfc_quanta)
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
