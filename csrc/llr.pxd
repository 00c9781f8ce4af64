# Link-level retry (Ultra Ethernet LLR; SONiC doc/llr/Link_Layer_Retry_Design.md) and
# bit errors on the wire.
#
# What it models: a link with a bit error rate corrupts a frame of L bits with probability
# 1 - (1 - BER)^L, drawn from the sending port's seeded stream; the receiver's FCS check
# fails. Without LLR the frame is dropped (DR_FCS) and an end-to-end transport must
# recover it. With LLR each link end numbers the frames it sends; the receiver accepts
# only the next number, discards a corrupted or out-of-sequence frame and sends a NACK
# (a control ordered set: no frame bytes, one propagation delay) once per gap. A NACK
# for sequence e sends the sender back N: it sends again, in order and before any new
# frame, every frame from e up to the last it had sent; a frame still on its way to the
# receiver (to be discarded there) is waited for. Nothing is lost, so no transport above
# retransmits.
#
# Limits: control frames (PFC, credit updates) are neither corrupted nor numbered; the
# replay buffer is unbounded (UEC sizes it to cover the link round trip) and ACKs are not
# modelled since they only free it; no replay limit; a go-back that a late NACK starts
# below frames already accepted skips them instead of sending duplicates; a cut-through
# switch checks the FCS when it starts forwarding.
from libc.math cimport expm1, log1p
from core cimport *


cdef inline void llr_mark(Sim* s, Port* pt, Packet* pk) noexcept nogil:
    # At the first bit: number the frame (first transmission only) and flip its bits.
    cdef double p
    if s.ber_any and pt.ber > 0.0:        # (ber is on the port's cold lines)
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
    if sender.replay_go and seq == sender.replay_next:
        kick(s, s.ports[sender.peer].peer)  # the sender was waiting for this frame


cdef inline void llr_nack(Sim* s, int32_t port, int32_t seq) noexcept nogil:
    # NACK(seq) at the sender: go back to seq, up to everything sent so far.
    cdef Port* pt = &s.ports[port]
    if not pt.replay_go or seq < pt.replay_next:
        pt.replay_next = seq
    pt.replay_until = pt.llr_seq
    pt.replay_go = pt.replay_next < pt.replay_until
    kick(s, port)


cdef inline int32_t replay_pop(Sim* s, Port* pt) noexcept nogil:
    # The next frame to send again, if it is back from the receiver; NO_PKT while it is
    # still on its way (the sender waits: llr_return kicks it when it arrives).
    cdef int32_t pi = pt.replay_head
    cdef int32_t accepted = s.ports[pt.peer].llr_expect
    if pt.replay_next < accepted:
        # A NACK sent before the receiver accepted these (a second corrupted frame) went
        # back too far: they were accepted and forwarded; skip them (a real sender would
        # resend them and the receiver drop them as duplicates).
        pt.replay_next = accepted
        if pt.replay_next >= pt.replay_until:
            pt.replay_go = 0
            return NO_PKT
    if pi < 0 or s.pkts[pi].llr_seq != pt.replay_next:
        return NO_PKT
    pt.replay_head = s.pkts[pi].next
    if pt.replay_head < 0:
        pt.replay_tail = -1
    s.pkts[pi].next = -1
    pt.replay_next += 1
    if pt.replay_next >= pt.replay_until:
        pt.replay_go = 0
    return pi


cdef inline bint llr_accept(Sim* s, int32_t rx_port, int32_t pi) noexcept nogil:
    # FCS and sequence check of a data frame arriving on rx_port. False: the frame is gone
    # (returned to the sender for replay, or dropped by the caller when LLR is off).
    cdef Port* rx
    cdef Port* tx
    cdef Packet* pk = &s.pkts[pi]
    cdef int64_t t_nack
    cdef bint corrupt = (pk.flags & PF_CORRUPT) != 0
    if not corrupt and not s.llr_any:
        # NOTE: most fabrics have no LLR and no bit errors: the receiving port's and its
        # sender's records are not read (the sender's LLR flag was a cache miss per hop)
        return 1
    rx = &s.ports[rx_port]
    tx = &s.ports[rx.peer]
    pk.flags &= ~PF_CORRUPT
    if corrupt:
        rx.fcs_errors += 1
    if not tx.llr:
        return not corrupt
    if not corrupt and pk.llr_seq == rx.llr_expect:
        rx.llr_expect += 1
        rx.llr_nacked = 0
        if tx.replay_go and tx.replay_next < rx.llr_expect:
            kick(s, rx.peer)                # a sender gone back too far skips what was accepted
        return 1
    llr_return(s, tx, pi)
    if corrupt or not rx.llr_nacked:
        rx.llr_nacked = 1
        t_nack = pk.t_last + tx.delay_ps          # from the receiver's MAC, one flight back
        schedule(s, t_nack if t_nack > s.now else s.now, EV_LLR_NACK, rx.peer, rx.llr_expect)
    return 0
