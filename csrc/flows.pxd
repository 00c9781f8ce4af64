# Raw-Ethernet flows at the hosts: the NIC transmit scheduler and the receive side.
#
# What it models: a NIC that owns a set of flows (size, start time, priority, no
# transport). An active flow sits in the ring of the source port it is pinned to, one ring
# per (port, priority); when that priority is chosen and its queue is empty the port pulls
# one frame from the ring's head flow and moves the flow to the tail, so flows of one
# priority share a port round robin, frame by frame. With per-packet spraying at the host
# (multi-plane NICs) the flow moves to the next candidate port's ring after every frame.
#
# Frame: Ether (14 B) + 802.1Q tag (4 B) + payload + FCS (4 B), at least 64 B, EtherType
# 0x88B6 (IEEE 802 local experimental 2); see ethlink/frames.
#
# Limits: no transport, no loss recovery (RoCE and ethlink transports add their own).
from core cimport *

cdef enum:
    RAW_OVERHEAD_BYTES = 22     # 14 B Ethernet + 4 B 802.1Q + 4 B FCS


cdef inline void ring_push(Sim* s, int32_t ring, int32_t f) noexcept nogil:
    s.flows[f].next = -1
    if s.ring_tail[ring] >= 0:
        s.flows[s.ring_tail[ring]].next = f
    else:
        s.ring_head[ring] = f
    s.ring_tail[ring] = f


cdef inline int32_t ring_pop(Sim* s, int32_t ring) noexcept nogil:
    cdef int32_t f = s.ring_head[ring]
    if f >= 0:
        s.ring_head[ring] = s.flows[f].next
        if s.ring_head[ring] < 0:
            s.ring_tail[ring] = -1
        s.flows[f].next = -1
    return f


cdef inline int32_t raw_frame_size(int32_t payload) noexcept nogil:
    cdef int32_t size = payload + RAW_OVERHEAD_BYTES
    return size if size >= MIN_FRAME_BYTES else MIN_FRAME_BYTES


cdef inline int32_t flow_make_packet(Sim* s, int32_t f) noexcept nogil:
    # One frame of flow f's next bytes. The caller queues it.
    cdef Flow* fl = &s.flows[f]
    cdef int64_t remaining = fl.size - fl.sent
    cdef int32_t payload = fl.mtu if remaining > fl.mtu else <int32_t>remaining
    cdef int32_t pi = pkt_alloc(s)
    cdef Packet* p
    if pi < 0:
        return NO_PKT
    p = &s.pkts[pi]
    p.flow = f
    p.src = fl.src
    p.dst = fl.dst
    p.payload = payload
    p.size = raw_frame_size(payload)
    p.offset = fl.sent
    p.psn = fl.packets
    p.prio = <uint8_t>fl.prio
    p.kind = FK_RAW
    fl.sent += payload
    fl.packets += 1
    if fl.sent == fl.size:
        p.flags = PF_LAST
    s.pkts_sent += 1
    return pi


cdef inline void flow_deliver(Sim* s, int32_t pi) noexcept nogil:
    cdef Packet* p = &s.pkts[pi]
    cdef Flow* fl = &s.flows[p.flow]
    fl.delivered += p.payload
    s.bytes_delivered += p.payload
    s.pkts_delivered += 1
    if fl.delivered == fl.size and fl.finish_ps < 0:
        fl.finish_ps = s.now
        s.flows_done += 1
