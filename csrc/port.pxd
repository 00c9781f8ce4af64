# Egress port: eight priority queues and the scheduler that picks the next frame.
#
# What it models: an output port of a switch or a NIC with one FIFO per 802.1Q priority,
# served by strict priority (7 highest) or deficit weighted round robin (Shreedhar and
# Varghese, SIGCOMM 1995) with a quantum of `Sim.dwrr_quantum x weight` bytes per visit.
# Queues are intrusive linked lists through Packet.next, so enqueue and dequeue are O(1)
# and no queue has a capacity of its own: admission (buffer accounting) is the switch's.
#
# A queue paused by PFC (Queue.paused_until in the future) is not eligible, unless the
# PFC watchdog has declared a storm and ignores pauses (Queue.wd_until). Control frames
# (PFC pause, credit updates) wait in a FIFO of their own that is served before any data
# queue and is never paused (IEEE 802.1Qbb: MAC Control frames are not subject to PFC).
#
# A port with LLR sends the frames its peer discarded (csrc/llr.pxd) after control frames
# and before any queue.
#
# Limits: the DWRR quantum must be at least one maximum frame (scenario validation
# enforces it), so one round always serves a non-empty queue.
from core cimport *


cdef inline void q_push(Sim* s, Queue* q, int32_t pi) noexcept nogil:
    cdef Packet* p = &s.pkts[pi]
    cdef int64_t qi
    p.next = -1
    if q.tail >= 0:
        s.pkts[q.tail].next = pi
    else:
        q.head = pi
        qi = q - s.queues
        s.ports[qi >> 3].qmask |= 1 << (qi & 7)
    q.tail = pi
    q.bytes += p.size
    q.pkts += 1
    q.enq_pkts += 1
    if q.bytes > q.hwm:
        q.hwm = q.bytes


cdef inline int32_t q_pop(Sim* s, Queue* q) noexcept nogil:
    cdef int32_t pi = q.head
    cdef int64_t qi
    if pi < 0:
        return NO_PKT
    q.head = s.pkts[pi].next
    if q.head < 0:
        q.tail = -1
        qi = q - s.queues
        s.ports[qi >> 3].qmask &= ~(1 << (qi & 7))
    else:
        prefetch(&s.pkts[q.head])           # the port's next frame: popped one frame time from now
    q.bytes -= s.pkts[pi].size
    q.pkts -= 1
    s.pkts[pi].next = -1
    return pi


cdef inline bint q_ready(Sim* s, Queue* q) noexcept nogil:
    # A queue may start its head frame: not paused (or the watchdog ignores the pause),
    # and under CBFC the receiver has room (csrc/cbfc.pxd) -- else the stall is timed.
    if q.head < 0:
        return 0
    if q.paused_until > s.now and q.wd_until <= s.now:
        return 0
    if s.cbfc_mask and q.cbfc_limit > 0 and (q.cbfc_used + (s.pkts[q.head].size + s.cbfc_cell - 1) // s.cbfc_cell
                             > q.cbfc_freed + q.cbfc_limit):
        if q.stall_start < 0:
            q.stall_start = s.now
        return 0
    return 1


cdef inline void ctrl_push(Sim* s, Port* pt, int32_t pi) noexcept nogil:
    s.pkts[pi].next = -1
    if pt.ctrl_tail >= 0:
        s.pkts[pt.ctrl_tail].next = pi
    else:
        pt.ctrl_head = pi
    pt.ctrl_tail = pi


cdef inline int32_t ctrl_pop(Sim* s, Port* pt) noexcept nogil:
    cdef int32_t pi = pt.ctrl_head
    if pi >= 0:
        pt.ctrl_head = s.pkts[pi].next
        if pt.ctrl_head < 0:
            pt.ctrl_tail = -1
        s.pkts[pi].next = -1
    return pi


cdef inline int32_t pick_strict(Sim* s, int32_t port) noexcept nogil:
    # Highest ready priority. Only non-empty queues are looked at (Port.qmask).
    # NOTE: a port's eight Queue records span over 2 kB; reading all eight on every frame
    # was most of port_try_start's cache misses on large fabrics.
    cdef int32_t prio
    cdef uint32_t m = <uint32_t>s.ports[port].qmask
    cdef Queue* qs = &s.queues[port * NPRIO]
    while m:
        prio = 31 - clz32(m)
        if q_ready(s, &qs[prio]):
            return prio
        m &= ~(<uint32_t>1 << prio)
    return -1


cdef inline int32_t pick_dwrr(Sim* s, int32_t port) noexcept nogil:
    # Serve the current queue while its deficit covers its head frame; otherwise move on
    # and credit the next non-empty queue one quantum. Empty queues keep no deficit.
    cdef Port* pt = &s.ports[port]
    cdef Queue* qs = &s.queues[port * NPRIO]
    cdef int32_t cur = pt.dwrr_next, visits = 0, size
    while visits < 3 * NPRIO:
        if q_ready(s, &qs[cur]):
            size = s.pkts[qs[cur].head].size
            if qs[cur].deficit >= size:
                qs[cur].deficit -= size
                pt.dwrr_next = cur
                return cur
        else:
            qs[cur].deficit = 0
        cur = (cur + 1) % NPRIO
        if q_ready(s, &qs[cur]):
            qs[cur].deficit += <int32_t>(s.dwrr_quantum * qs[cur].weight)
        visits += 1
    return -1


cdef inline int32_t pick_queue(Sim* s, int32_t port) noexcept nogil:
    if s.ports[port].sched == SCHED_DWRR:
        return pick_dwrr(s, port)
    return pick_strict(s, port)
