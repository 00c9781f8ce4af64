# Raw-Ethernet messages: frames with no transport, and their delivery.
#
# What it models: a raw flow is a message on a send-only QP endpoint; its frames carry
# payload in mtu-sized pieces, numbered 0.. (the trace's psn), with no ACK and no
# recovery: what a switch drops is lost.
#
# Frame: Ether (14 B) + 802.1Q tag (4 B) + payload + FCS (4 B), at least 64 B, EtherType
# 0x88B6 (IEEE 802 local experimental 2); see ethlink/frames.
from core cimport *

cdef enum:
    RAW_OVERHEAD_BYTES = 22     # 14 B Ethernet + 4 B 802.1Q + 4 B FCS


cdef inline int32_t raw_frame_size(int32_t payload) noexcept nogil:
    cdef int32_t size = payload + RAW_OVERHEAD_BYTES
    return size if size >= MIN_FRAME_BYTES else MIN_FRAME_BYTES


cdef inline int32_t raw_make_packet(Sim* s, int32_t qi, int32_t f) noexcept nogil:
    # The frame at the QP's snd_nxt, which lies in message f. The caller advances snd_nxt.
    cdef Flow* fl = &s.flows[f]
    cdef int64_t offset = <int64_t>(s.qps[qi].snd_nxt - fl.psn_start) * fl.mtu
    cdef int64_t remaining = fl.size - offset
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
    p.offset = offset
    p.psn = s.qps[qi].snd_nxt - fl.psn_start
    p.prio = <uint8_t>fl.prio
    p.kind = FK_RAW
    if offset + payload == fl.size:
        p.flags = PF_LAST
    return pi


cdef inline bint deliver_payload(Sim* s, int32_t f, int32_t payload) noexcept nogil:
    # A receiver accepted `payload` bytes of message f (any transport); true when that
    # was its last byte (finish_ps is then set).
    cdef Flow* fl = &s.flows[f]
    fl.delivered += payload
    s.bytes_delivered += payload
    s.pkts_delivered += 1
    if fl.delivered == fl.size and fl.finish_ps < 0:
        fl.finish_ps = s.now
        s.flows_done += 1
        return 1
    return 0


cdef inline void raw_deliver(Sim* s, int32_t pi) noexcept nogil:
    # Raw messages have no acknowledgement: delivery of the last byte is the completion.
    if deliver_payload(s, s.pkts[pi].flow, s.pkts[pi].payload):
        complete_message(s, s.pkts[pi].flow)
