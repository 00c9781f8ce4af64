# Link-level retry (Ultra Ethernet LLR; SONiC doc/llr/Link_Layer_Retry_Design.md) and
# bit errors on the wire.
#
# What it models: a link with a bit error rate corrupts a frame of L bits with probability
# 1 - (1 - BER)^L, drawn from the sending port's seeded stream; the receiver's FCS check
# fails. Without LLR the frame is dropped (DR_FCS) and an end-to-end transport must
# recover it. With LLR each link end numbers the frames it sends; the receiver accepts
# only the next number, discards a corrupted or out-of-sequence frame and sends a NACK
# (a control ordered set: no frame bytes, one propagation delay) once per gap; the sender
# then sends again, in sequence order and before any new frame, every frame the receiver
# discarded (go-back-N from the first lost one). Nothing is lost, so no transport above
# retransmits.
#
# Limits: control frames (PFC, credit updates) are neither corrupted nor numbered; the
# replay buffer is unbounded (UEC sizes it to cover the link round trip) and ACKs are not
# modelled since they only free it; no replay limit; a cut-through switch checks the FCS
# when it starts forwarding.
from libc.math cimport expm1, log1p
from core cimport *


cdef inline void llr_mark(Sim* s, Port* pt, Packet* pk) noexcept nogil:
    # At the first bit: number the frame (first transmission only) and flip its bits.
    cdef double p
    if pt.ber > 0.0:
        p = -expm1(<double>(pk.size * 8) * log1p(-pt.ber))
        if rng_uniform(&pt.rng) < p:
            pk.flags |= PF_CORRUPT


cdef inline void llr_return(Sim* s, Port* sender, int32_t pi) noexcept nogil:
    # A discarded frame goes back to its sender's replay list, kept in sequence order.
    cdef int32_t seq = s.pkts[pi].llr_seq, cur, prev = -1
    cur = sender.replay_head
    while cur >= 0 and s.pkts[cur].llr_seq < seq:
        prev = cur
        cur = s.pkts[cur].next
    s.pkts[pi].next = cur
    if prev >= 0:
        s.pkts[prev].next = pi
    else:
        sender.replay_head = pi
    if cur < 0:
        sender.replay_tail = pi


cdef inline int32_t replay_pop(Sim* s, Port* pt) noexcept nogil:
    cdef int32_t pi = pt.replay_head
    if pi >= 0:
        pt.replay_head = s.pkts[pi].next
        if pt.replay_head < 0:
            pt.replay_tail = -1
            pt.replay_go = 0
        s.pkts[pi].next = -1
    return pi


cdef inline bint llr_accept(Sim* s, int32_t rx_port, int32_t pi) noexcept nogil:
    # FCS and sequence check of a data frame arriving on rx_port. False: the frame is gone
    # (returned to the sender for replay, or dropped by the caller when LLR is off).
    cdef Port* rx = &s.ports[rx_port]
    cdef Port* tx = &s.ports[rx.peer]
    cdef Packet* pk = &s.pkts[pi]
    cdef int64_t t_nack
    cdef bint corrupt = (pk.flags & PF_CORRUPT) != 0
    pk.flags &= ~PF_CORRUPT
    if corrupt:
        rx.fcs_errors += 1
    if not tx.llr:
        return not corrupt
    if not corrupt and pk.llr_seq == rx.llr_expect:
        rx.llr_expect += 1
        rx.llr_nacked = 0
        return 1
    llr_return(s, tx, pi)
    if corrupt or not rx.llr_nacked:
        rx.llr_nacked = 1
        t_nack = pk.t_last + tx.delay_ps          # from the receiver's MAC, one flight back
        schedule(s, t_nack if t_nack > s.now else s.now, EV_LLR_NACK, rx.peer, rx.llr_expect)
    return 0
