# Ultra Ethernet transport (UET, Ultra Ethernet Specification 1.0, June 2025): the Packet
# Delivery Sublayer in reliable unordered delivery mode (PDS RUD) carrying SES WRITE
# requests, with packet spraying, selective acknowledgement and selective retransmission.
#
# What it models. A message posted on a UET queue pair (a PDC between two endpoints) is
# cut into path-MTU packets with consecutive PSNs, as RoCE does; unlike RoCE, the
# receiver accepts every packet whatever its order (RUD), so each packet may take its own
# path: with uet.spray the switches' ECMP hash takes a per-packet entropy value (the UDP
# source port of the frame; engine.pyx `route`), and a host with several NIC ports (one
# per plane) sends its packets over them in turn (engine.pyx `host_sprays`), while RoCE
# flows on the same fabric stay on their per-flow path. The receiver answers each data packet with an ACK_CC
# (PDS type 8): CACK_PSN (every PSN up to it received), ACK_PSN_OFFSET (which packet
# this ACK is for), and a 64-bit SACK bitmap of the PSNs after CACK. The sender marks each
# PSN acknowledged from the cumulative part and the bitmap, and keeps per-PSN state
# (Sim.uet_st, a side array; Qp.uet_base is the endpoint's first slot):
#   UST_UNSENT -> UST_INFLIGHT (sent) -> UST_ACKED, or -> UST_RETX (NACKed, or its timer
#   expired) -> UST_INFLIGHT (sent again, alone) -> ...
# Only PSNs in UST_RETX are sent again: one lost or trimmed packet costs one packet, never
# a go-back-N. A trimmed packet (header only, PF_TRIM; see engine.pyx `switch_enqueue`)
# reaching the receiver is answered by a NACK (PDS type 10, code UET_PDS_NACK_CODE_TRIMMED
# 0x01) for its PSN; the sender retransmits that PSN at once. A PSN neither acknowledged
# nor NACKed uet.rto after it was (last) sent is marked for retransmission when the QP's
# lazy timer fires (a timeout, counted). Messages complete (CQE) in posting order, when
# every PSN up to their last is acknowledged. A QP that sends uet.retry_limit
# retransmissions in a row without any newly acknowledged PSN gives up (as RoCE's retry
# limit: `qp_errors`, its messages left incomplete): a fabric that trims or drops every
# copy of a frame (a queue threshold below one frame) would otherwise retransmit forever.
#
# The sender may have at most Qp.uet_cwnd bytes outstanding, counted as full-MTU packets
# (uet_inflight x mtu): NSCC sets the window when uet.nscc is on (csrc/nscc.pxd: each
# ACK_CC gives it an RTT sample, the ECN echo and the bytes newly acknowledged; each NACK
# the trimmed packet's bytes), otherwise it is uet.window (0: unlimited). Data frames leave as ECT(0) when roce.ecn is on (the fabric's ECN
# setting); the ACK echoes CE in its prologue's ECN_MARKED flag (Packet.syndrome bit 0).
#
# Receiver: Qp.epsn is the cumulative point (every PSN below received) and Qp.unacked the
# number of PSNs received beyond it (RoCE's in-order counter, unused by UET receivers).
#
# Packet fields used (no new Packet fields): data: psn = PSN, offset = message byte
# offset, opcode = SES opcode (UET_WRITE 0x01), syndrome bit 0 = PDS retransmission
# flag, flags PF_LAST (SES EOM) and PF_TRIM. ACK_CC: opcode = PDS type 8, psn = CACK_PSN
# + 1 (every PSN below it received), offset = SACK bitmap (bit i: PSN psn + i received),
# ntx = ACK_PSN_OFFSET (the PSN acknowledged minus CACK_PSN; 0 for a duplicate below CACK),
# syndrome bit 0 = ECN_MARKED. NACK: opcode = PDS type 10, psn = NACK_PSN, syndrome = NACK
# code.
#
# Frame bytes: Ether 14 + 802.1Q 4 + IPv4 20 + UDP 8 + PDS RUD request 12 + SES standard
# request 44 + payload + FCS 4; ACK_CC: ... + PDS ACK 12 + CC/SACK 20 + FCS (82 B); NACK:
# ... + PDS NACK 16 + FCS (66 B). Header layouts: ethlink/frames/fields.py (from the public
# reimplementations of UET 1.0 section 3.5 cited there).
#
# Limits: no PDC establishment (SYN), no CLEAR/close handshake, no ROD/RUDI/UUD modes; a
# PDC per QP with a fixed path MTU; one ACK per data packet (no ACK coalescing); no
# loss inference from the SACK bitmap (htsim's out-of-order count): a drop without
# trimming is recovered by the timer; PSNs are not wrapped at 2**32; no SES responses
# (the PDS ACK completes a WRITE); no ICRC/encryption (TSS); a NACK travels at the trimmed frame's priority
# unless roce.ack_prio sets one for every ACK.
from core cimport *
from nic cimport qp_activate, nic_send
from roce cimport (roce_new, rto_arm, rto_event_at_deadline, discard_copy, msg_at_snd_nxt, msg_holding,
                  complete_below)
from flows cimport deliver_payload
from nscc cimport nscc_on_ack, nscc_on_nack

cdef extern from *:
    """
    #define uet_ctz64(x) __builtin_ctzll(x)
    """
    int uet_ctz64(uint64_t x) noexcept nogil


cdef enum UetState:             # sender per-PSN state (Sim.uet_st)
    UST_UNSENT = 0
    UST_INFLIGHT = 1
    UST_ACKED = 2
    UST_RETX = 3

cdef enum UetPdsType:           # PDS prologue type (UET 1.0 section 3.5.10)
    PDS_RUD_REQ = 2
    PDS_ACK_CC = 8
    PDS_NACK = 10

cdef enum:
    SES_WRITE = 0x01            # SES request opcode UET_WRITE
    NACK_TRIMMED = 0x01         # UET_PDS_NACK_CODE_TRIMMED
    UET_DATA_BASE_BYTES = 106   # Ether+802.1Q+IPv4+UDP (46) + PDS 12 + SES 44 + FCS 4
    UET_ACK_BYTES = 82          # Ether+802.1Q+IPv4+UDP + PDS ACK 12 + CC/SACK 20 + FCS
    UET_NACK_BYTES = 66         # Ether+802.1Q+IPv4+UDP + PDS NACK 16 + FCS


cdef inline int32_t uet_new(Sim* s, int32_t kind, int32_t op, int32_t src, int32_t dst,
                            int32_t dest_qp, int32_t prio, int32_t payload, int32_t size) noexcept nogil:
    # A packet addressed as RoCE's are (roce_new), with UET's frame size and ECN.
    cdef int32_t pi = roce_new(s, kind, op, src, dst, dest_qp, prio, payload)
    if pi < 0:
        return NO_PKT
    s.pkts[pi].size = size if size >= MIN_FRAME_BYTES else MIN_FRAME_BYTES
    if s.ecn_capable and kind == FK_UET:
        s.pkts[pi].ecn = 2                  # ECT(0)
    return pi


# ---------------------------------------------------------------------------------------
# Sender.

cdef inline bint uet_window_open(Sim* s, Qp* q) noexcept nogil:
    return (q.uet_inflight + 1) * q.mtu <= q.uet_cwnd or q.uet_inflight == 0


cdef inline int32_t uet_data_packet(Sim* s, int32_t qi, int32_t f, int32_t psn, bint retx) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    cdef Flow* fl = &s.flows[f]
    cdef int32_t k = psn - fl.psn_start
    cdef int64_t offset = <int64_t>k * fl.mtu
    cdef int32_t payload = <int32_t>(fl.size - offset if fl.size - offset < fl.mtu else fl.mtu)
    cdef int32_t pi = uet_new(s, FK_UET, SES_WRITE, fl.src, fl.dst, q.peer, fl.prio, payload,
                              UET_DATA_BASE_BYTES + payload)
    if pi < 0:
        return NO_PKT
    s.pkts[pi].flow = f
    s.pkts[pi].psn = psn
    s.pkts[pi].offset = offset
    if k == fl.npkts - 1:
        s.pkts[pi].flags = PF_LAST
    fl.packets += 1
    if retx:
        s.pkts[pi].syndrome = 1             # PDS prologue RETX flag
        q.retx_pkts += 1
        s.retx_pkts += 1
        s.uet_sel_retx += 1
        s.bytes_retx += payload
        fl.retx += 1
    else:
        fl.sent += payload
        s.bytes_sent += payload
    s.uet_st[q.uet_base + psn] = UST_INFLIGHT
    s.uet_sent_ps[q.uet_base + psn] = s.now
    q.uet_inflight += 1
    return pi


cdef inline int32_t uet_next_packet(Sim* s, int32_t qi) noexcept nogil:
    # One frame from UET sender qi: a PSN marked for retransmission first (oldest first),
    # else the next new PSN if the window allows; NO_PKT if neither.
    cdef Qp* q = &s.qps[qi]
    cdef int32_t psn, f, pi
    cdef uint8_t* st = s.uet_st + q.uet_base
    if q.uet_rtx_n > 0 and uet_window_open(s, q):
        psn = q.uet_rtx_scan
        while psn < q.snd_max and st[psn] != UST_RETX:
            psn += 1
        if psn < q.snd_max:
            q.uet_rtx_scan = psn + 1
            q.uet_rtx_n -= 1
            f = msg_holding(s, q.msg_head, psn)   # psn >= snd_una: not in a completed one
            pi = uet_data_packet(s, qi, f, psn, 1)
            if pi >= 0 and not q.rto_armed:
                rto_arm(s, qi)
            return pi
        q.uet_rtx_n = 0                     # (unreachable if the count is kept right)
    if q.snd_nxt >= q.psn_end or not uet_window_open(s, q):
        return NO_PKT
    f = msg_at_snd_nxt(s, q)
    if f < 0:
        return NO_PKT
    q.msg_cur = f
    pi = uet_data_packet(s, qi, f, q.snd_nxt, 0)
    if pi < 0:
        return NO_PKT
    q.snd_nxt += 1
    if q.snd_nxt > q.snd_max:
        q.snd_max = q.snd_nxt
    if not q.rto_armed:
        rto_arm(s, qi)
    return pi


cdef inline bint uet_has_more(Sim* s, int32_t qi) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    return uet_window_open(s, q) and (q.uet_rtx_n > 0 or q.snd_nxt < q.psn_end)


cdef inline void uet_give_up(Sim* s, Qp* q) noexcept nogil:
    # Retry limit reached: the QP sends nothing more; its messages stay incomplete.
    s.qp_errors += 1
    q.snd_nxt = q.psn_end
    q.snd_una = q.psn_end
    q.snd_max = q.psn_end
    q.uet_rtx_n = 0
    q.rto_armed = 0


cdef inline void uet_mark_retx(Sim* s, Qp* q, int32_t psn) noexcept nogil:
    # An in-flight PSN is to be sent again (NACK or timer): it leaves the window.
    s.uet_st[q.uet_base + psn] = UST_RETX
    q.uet_inflight -= 1
    q.uet_rtx_n += 1
    q.retries += 1
    if psn < q.uet_rtx_scan:
        q.uet_rtx_scan = psn


cdef inline bint uet_ack_psn(Sim* s, Qp* q, int32_t psn) noexcept nogil:
    # Mark `psn` acknowledged; true if it was not already.
    cdef uint8_t* st = s.uet_st + q.uet_base
    if st[psn] == UST_ACKED:
        return 0
    if st[psn] == UST_INFLIGHT:
        q.uet_inflight -= 1
    elif st[psn] == UST_RETX:
        q.uet_rtx_n -= 1                    # a late first copy arrived: no need to resend
    st[psn] = UST_ACKED
    return 1


cdef inline void uet_rx_ack(Sim* s, int32_t pi) noexcept nogil:
    # ACK_CC or NACK at sender pk.qp.
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t qi = pk.qp
    cdef Qp* q = &s.qps[qi]
    cdef uint8_t* st = s.uet_st + q.uet_base
    cdef int32_t p, i, cack
    cdef uint64_t bits
    cdef bint progress = 0
    cdef int64_t newly = 0, rtt = -1
    if pk.opcode == PDS_NACK:
        q.uet_nacks_rx += 1
        q.naks_rx += 1
        s.naks += 1
        if pk.psn >= q.snd_una and pk.psn < q.snd_max and st[pk.psn] == UST_INFLIGHT:
            uet_mark_retx(s, q, pk.psn)
            if q.retries > s.uet_retry_limit:
                uet_give_up(s, q)
                return
            if s.nscc:
                nscc_on_nack(s, qi, q.mtu)
        qp_activate(s, qi)
        return
    q.acks_rx += 1
    p = pk.psn - 1 + pk.ntx                 # ACK_PSN_OFFSET: the packet this ACK is for,
    if 0 <= p < q.snd_max:                  # which may lie beyond the bitmap
        if st[p] == UST_INFLIGHT:
            rtt = s.now - s.uet_sent_ps[q.uet_base + p]     # an RTT sample for NSCC
        newly += uet_ack_psn(s, q, p)
    cack = pk.psn if pk.psn < q.snd_max else q.snd_max
    for p in range(q.snd_una, cack):
        newly += uet_ack_psn(s, q, p)
    bits = <uint64_t>pk.offset
    if bits:
        q.uet_sacks_rx += 1
        while bits:
            # NOTE: set bits only (count trailing zeros), not all 64 positions
            i = uet_ctz64(bits)
            bits &= bits - 1
            p = pk.psn + i
            if p >= q.snd_max:
                break
            newly += uet_ack_psn(s, q, p)
    if newly:
        q.retries = 0                       # the retry limit counts retransmissions in a row
    if s.nscc:
        nscc_on_ack(s, qi, rtt, pk.syndrome & 1, newly * q.mtu)
    while q.snd_una < q.snd_max and st[q.snd_una] == UST_ACKED:
        q.snd_una += 1
        progress = 1
    if progress:
        q.rto_ps = s.uet_rto_ps
        complete_below(s, q, q.snd_una)
    if q.uet_rtx_scan < q.snd_una:
        q.uet_rtx_scan = q.snd_una
    if q.snd_una < q.snd_max:
        if progress:
            rto_arm(s, qi)
    else:
        q.rto_armed = 0
    qp_activate(s, qi)


cdef inline void uet_rto(Sim* s, int32_t qi, int32_t gen) noexcept nogil:
    # The QP's timer: every PSN in flight for a whole uet.rto since it was last sent is
    # marked for retransmission (each one alone).
    cdef Qp* q = &s.qps[qi]
    cdef uint8_t* st = s.uet_st + q.uet_base
    cdef int64_t* sent = s.uet_sent_ps + q.uet_base
    cdef int32_t p
    cdef int64_t oldest = -1
    cdef bint fired = 0
    if gen != q.rto_gen:
        return
    q.rto_pending = 0
    if not q.rto_armed:
        return
    if s.now < q.rto_deadline:
        rto_event_at_deadline(s, qi)
        return
    q.rto_armed = 0
    for p in range(q.snd_una, q.snd_max):
        if st[p] == UST_INFLIGHT:
            if s.now - sent[p] >= s.uet_rto_ps:
                uet_mark_retx(s, q, p)
                fired = 1
            elif oldest < 0 or sent[p] < oldest:
                oldest = sent[p]
    if fired:
        q.timeouts += 1
        s.timeouts += 1
        if q.retries > s.uet_retry_limit:
            uet_give_up(s, q)
            return
    if q.snd_una < q.snd_max:
        # next expiry: the oldest packet still in flight (or now, for those just marked)
        q.rto_deadline = (oldest + s.uet_rto_ps) if oldest >= 0 else s.now + s.uet_rto_ps
        q.rto_armed = 1
        q.rto_gen += 1
        rto_event_at_deadline(s, qi)
    qp_activate(s, qi)


# ---------------------------------------------------------------------------------------
# Receiver.

cdef inline void uet_send_ack(Sim* s, int32_t qi, int32_t acked, uint8_t ce, int32_t prio) noexcept nogil:
    # ACK_CC from receiver qi for PSN `acked`: CACK (epsn - 1), the SACK bitmap after it.
    cdef Qp* q = &s.qps[qi]
    cdef uint8_t* st = s.uet_st + q.uet_base
    cdef uint64_t bits = 0
    cdef int32_t i, p, pi, left = q.unacked
    # NOTE: Qp.unacked counts the PSNs received beyond epsn: the scan stops when it has
    # found them all (in-order traffic builds no bitmap at all).
    i = 0
    while left > 0 and i < s.uet_sack_bits:
        p = q.epsn + i
        if p >= q.uet_cap:
            break
        if st[p]:
            bits |= <uint64_t>1 << i
            left -= 1
        i += 1
    pi = uet_new(s, FK_UET_CTRL, PDS_ACK_CC, q.host, s.qps[q.peer].host, q.peer,
                 s.ack_prio if s.ack_prio >= 0 else prio, 0, UET_ACK_BYTES)
    if pi < 0:
        return
    s.pkts[pi].psn = q.epsn
    s.pkts[pi].offset = <int64_t>bits
    i = acked - (q.epsn - 1)
    s.pkts[pi].ntx = i if 0 <= i <= 65535 else 0
    s.pkts[pi].syndrome = ce
    s.uet_acks += 1
    if bits:
        s.uet_sacks += 1
    nic_send(s, qi, pi)


cdef inline void uet_send_nack(Sim* s, int32_t qi, int32_t psn, int32_t prio) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    cdef int32_t pi = uet_new(s, FK_UET_CTRL, PDS_NACK, q.host, s.qps[q.peer].host, q.peer,
                              s.ack_prio if s.ack_prio >= 0 else prio, 0, UET_NACK_BYTES)
    if pi < 0:
        return
    s.pkts[pi].psn = psn
    s.pkts[pi].syndrome = NACK_TRIMMED
    s.uet_nacks += 1
    nic_send(s, qi, pi)


cdef inline void uet_rx_data(Sim* s, int32_t pi) noexcept nogil:
    # A UET data frame (or its trimmed header) at receiver pk.qp; the caller frees pi.
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t qi = pk.qp
    cdef Qp* q = &s.qps[qi]
    cdef uint8_t* st = s.uet_st + q.uet_base
    if pk.flags & PF_TRIM:
        # The payload was cut off in the fabric (counted there): ask for this PSN alone.
        uet_send_nack(s, qi, pk.psn, pk.prio)
        return
    if pk.psn < q.epsn or st[pk.psn]:
        discard_copy(s, q, pk)              # a copy of a PSN already accepted
        uet_send_ack(s, qi, pk.psn, pk.ecn == 3, pk.prio)
        return
    st[pk.psn] = 1
    q.unacked += 1                          # received at or beyond epsn (see uet_send_ack)
    deliver_payload(s, pk.flow, pk.payload)
    while q.epsn < q.uet_cap and st[q.epsn]:
        q.epsn += 1
        q.unacked -= 1
    uet_send_ack(s, qi, pk.psn, pk.ecn == 3, pk.prio)
