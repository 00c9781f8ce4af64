# The NIC: which queue pair sends next on a port, and how a host sends control frames.
#
# What it models: every queue-pair endpoint (QP) with something to send sits in the ring
# of its NIC port and priority; when the port picks that priority and its NIC queue is
# empty, it asks the ring's head QP for one frame and moves the QP to the tail: QPs of one
# priority share the port round robin, frame by frame (as NIC schedulers do between QPs of
# one traffic class). A QP that cannot send (rate limiter, nothing outstanding) leaves the
# ring and is put back by whatever makes it ready (a timer, an ACK, a NAK, a new message).
# Control frames a host originates (ACK, NAK, CNP) go straight into the NIC queue of their
# priority on the QP's port.
#
# Limits: NIC queues are unbounded (a NIC holds at most one pre-built data frame per
# priority, plus control frames); the NIC's receive side is not modelled (it drains at
# line rate, so hosts never send PFC).
from core cimport *
from port cimport q_push
from route cimport Hops, route_hops, route_nth, route_spray


cdef inline void ring_push(Sim* s, int32_t ring, int32_t qi) noexcept nogil:
    s.qps[qi].next = -1
    s.qps[qi].in_ring = 1
    if s.ring_tail[ring] >= 0:
        s.qps[s.ring_tail[ring]].next = qi
    else:
        s.ring_head[ring] = qi
        s.ring_mask[ring >> 3] |= <uint8_t>(1 << (ring & 7))
    s.ring_tail[ring] = qi


cdef inline int32_t ring_pop(Sim* s, int32_t ring) noexcept nogil:
    cdef int32_t qi = s.ring_head[ring]
    if qi >= 0:
        s.ring_head[ring] = s.qps[qi].next
        if s.ring_head[ring] < 0:
            s.ring_tail[ring] = -1
            s.ring_mask[ring >> 3] &= <uint8_t>~(1 << (ring & 7))
        s.qps[qi].next = -1
        s.qps[qi].in_ring = 0
    return qi


cdef inline int32_t host_port(Sim* s, int32_t host, int32_t dst, uint64_t key) noexcept nogil:
    # The NIC port towards `dst`: ECMP over the host's equal-cost ports by a seeded hash.
    cdef int32_t node = s.host_node[host]
    cdef Hops h = route_hops(s, node, dst)
    if h.n == 1:
        return h.first
    return route_nth(s, &h, node, dst, <int32_t>(hash3(s.seed, <uint64_t>node, key) % <uint64_t>h.n))


cdef inline int32_t host_port_k(Sim* s, int32_t host, int32_t dst, int32_t k) noexcept nogil:
    # The k-th (mod count) of the host's equal-cost ports towards dst: spraying.
    return route_spray(s, s.host_node[host], dst, k)


cdef inline void qp_activate(Sim* s, int32_t qi) noexcept nogil:
    # Put a QP that may have something to send into its port's ring and wake the port.
    cdef Qp* q = &s.qps[qi]
    if q.in_ring or q.port < 0:
        return
    ring_push(s, q.port * NPRIO + q.prio, qi)
    kick(s, q.port)


cdef inline void nic_send(Sim* s, int32_t qi, int32_t pi) noexcept nogil:
    # A control frame from QP endpoint qi's host into the NIC queue of its priority.
    cdef Qp* q = &s.qps[qi]
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t port = q.port
    cdef Queue* nq
    if port < 0:
        port = host_port(s, q.host, pk.dst, <uint64_t>qi)
    nq = &s.queues[port * NPRIO + pk.prio]
    q_push(s, nq, pi)
    trace_pkt(s, TE_ENQUEUE, s.ports[port].node, port, pi, nq.bytes, DR_NONE)
    kick(s, port)
