# RoCEv2 reliable-connection transport in the NIC (InfiniBand Architecture Specification
# Annex A17 for RoCEv2; IBA volume 1 chapter 9 for RC semantics; opcodes and headers as in
# Linux drivers/infiniband/sw/rxe/rxe_opcode.c).
#
# What it models. Messages (WRITE, SEND, their _IMM forms, READ) are posted on a QP and
# segmented into path-MTU packets with consecutive PSNs. The requester sends at snd_nxt
# and keeps snd_una, the oldest unacknowledged PSN. The responder accepts only the
# expected PSN (epsn): in order it delivers and ACKs (AETH syndrome ACK, MSN) every
# `ack_every` packets and at each message end; a PSN beyond epsn is discarded and answered
# by one NAK (PSN sequence error, syndrome 0x60) until epsn arrives; an old PSN is a
# duplicate, discarded and re-ACKed. A NAK sends the requester back to the NAKed PSN
# (go-back-N); a retransmission timeout back to snd_una.
#
# The timeout is the IBA local ACK timeout, 4.096 us x 2^timeout (IBA vol. 1 9.7.6.1.3;
# Linux qib_rc.c computes it so), 0 meaning infinite; ethlink.scenario turns roce.timeout
# into ps (or takes roce.rto). Consecutive expiries double it up to rto_max (by default
# no doubling past the IBA value itself), and progress resets it. A copy of a PSN the
# receiver had already accepted is a spurious retransmission (Qp.spurious): it can only
# come from a timeout or NAK that fired while the first copy was queued, not lost.
# A READ request (RETH with the length) consumes the PSNs of its responses; the responder
# streams READ RESPONSE FIRST/MIDDLE/LAST/ONLY (AETH on first, last, only), which are the
# requester's acknowledgement; a gap makes the requester re-issue the READ for the rest.
# A completion (CQE) is recorded when the last PSN of a message is acknowledged.
#
# Congestion: data frames leave as ECT(0) when ECN is on; a responder (notification point)
# receiving CE sends a CNP (BTH opcode 0x81) to the sending QP at most once per
# cnp_interval; the sender's DCQCN (dcqcn.pxd) sets the QP's rate, which paces its frames.
# With HPCC (hpcc.pxd) instead, data frames carry INT, ACKs echo it, and the sender keeps
# its bytes in flight below its window W and paces at W / T.
#
# Frame bytes: Ether 14 + 802.1Q 4 + IPv4 20 + UDP 8 + BTH 12 + extension headers
# (RETH 16, ImmDt 4, AETH 4) + payload + pad to 4 B + ICRC 4 + FCS 4 (ethlink/frames
# builds the bytes).
#
# After `retry_limit` consecutive timeouts without progress the QP enters the error state
# and gives up (its messages stay incomplete; `qp_errors` counts such QPs).
#
# Limits: IPv4, RC only; no RNR NAK (receive buffers are always posted); no atomics in this
# transport (ethlink Load/Store atomics are a separate transport); PSNs are not wrapped at
# 2**24 in the engine (the frame builder masks them); no per-QP outstanding-read limit.
from core cimport *
from nic cimport qp_activate, nic_send
from dcqcn cimport dc_on_bytes
from flows cimport deliver_payload
from hpcc cimport hp_echo, hp_window_open, hp_on_ack, INT_BASE_BYTES

cdef enum RoceOp:               # BTH opcodes, RC (IBA table 41)
    OP_SEND_FIRST = 0x00
    OP_SEND_MIDDLE = 0x01
    OP_SEND_LAST = 0x02
    OP_SEND_LAST_IMM = 0x03
    OP_SEND_ONLY = 0x04
    OP_SEND_ONLY_IMM = 0x05
    OP_WRITE_FIRST = 0x06
    OP_WRITE_MIDDLE = 0x07
    OP_WRITE_LAST = 0x08
    OP_WRITE_LAST_IMM = 0x09
    OP_WRITE_ONLY = 0x0A
    OP_WRITE_ONLY_IMM = 0x0B
    OP_READ_REQUEST = 0x0C
    OP_READ_RESP_FIRST = 0x0D
    OP_READ_RESP_MIDDLE = 0x0E
    OP_READ_RESP_LAST = 0x0F
    OP_READ_RESP_ONLY = 0x10
    OP_ACK = 0x11
    OP_CNP = 0x81

cdef enum:
    ROCE_BASE_BYTES = 66        # Ether+802.1Q+IPv4+UDP+BTH+ICRC+FCS
    RETH_BYTES = 16
    AETH_BYTES = 4
    IMM_BYTES = 4
    CNP_BYTES = 82              # base + 16 reserved bytes (Annex A17.9.3)
    SYN_ACK = 0x1F              # AETH: ACK, credit count "unlimited"
    SYN_NAK_SEQ = 0x60          # AETH: NAK, PSN sequence error


cdef inline int32_t roce_ext_bytes(int32_t op) noexcept nogil:
    if op == OP_WRITE_FIRST or op == OP_WRITE_ONLY or op == OP_READ_REQUEST:
        return RETH_BYTES
    if op == OP_WRITE_ONLY_IMM:
        return RETH_BYTES + IMM_BYTES
    if op == OP_WRITE_LAST_IMM or op == OP_SEND_LAST_IMM or op == OP_SEND_ONLY_IMM:
        return IMM_BYTES
    if op == OP_READ_RESP_FIRST or op == OP_READ_RESP_LAST or op == OP_READ_RESP_ONLY or op == OP_ACK:
        return AETH_BYTES
    if op == OP_CNP:
        return 16
    return 0


cdef inline int32_t roce_frame_size(int32_t op, int32_t payload) noexcept nogil:
    # BTH PadCnt pads the payload to a multiple of 4 bytes (IBA 9.2; ICRC is 4-aligned).
    cdef int32_t size = ROCE_BASE_BYTES + roce_ext_bytes(op) + payload + ((4 - (payload & 3)) & 3)
    return size if size >= MIN_FRAME_BYTES else MIN_FRAME_BYTES


cdef inline int32_t data_opcode(int32_t verb, int32_t k, int32_t n) noexcept nogil:
    # Opcode of packet k of n of a WRITE/SEND message.
    cdef bint first = k == 0, last = k == n - 1
    if verb == VERB_WRITE or verb == VERB_WRITE_IMM:
        if first and last:
            return OP_WRITE_ONLY_IMM if verb == VERB_WRITE_IMM else OP_WRITE_ONLY
        if first:
            return OP_WRITE_FIRST
        if last:
            return OP_WRITE_LAST_IMM if verb == VERB_WRITE_IMM else OP_WRITE_LAST
        return OP_WRITE_MIDDLE
    if first and last:
        return OP_SEND_ONLY_IMM if verb == VERB_SEND_IMM else OP_SEND_ONLY
    if first:
        return OP_SEND_FIRST
    if last:
        return OP_SEND_LAST_IMM if verb == VERB_SEND_IMM else OP_SEND_LAST
    return OP_SEND_MIDDLE


cdef inline int32_t resp_opcode(int32_t k, int32_t n) noexcept nogil:
    if n == 1:
        return OP_READ_RESP_ONLY
    if k == 0:
        return OP_READ_RESP_FIRST
    if k == n - 1:
        return OP_READ_RESP_LAST
    return OP_READ_RESP_MIDDLE


cdef inline int32_t roce_new(Sim* s, int32_t kind, int32_t op, int32_t src, int32_t dst,
                             int32_t dest_qp, int32_t prio, int32_t payload) noexcept nogil:
    cdef int32_t pi = pkt_alloc(s)
    cdef Packet* p
    if pi < 0:
        return NO_PKT
    p = &s.pkts[pi]
    p.kind = <uint8_t>kind
    p.opcode = <uint8_t>op
    p.src = src
    p.dst = dst
    p.qp = dest_qp
    p.prio = <uint8_t>prio
    p.payload = payload
    p.size = roce_frame_size(op, payload)
    p.flow = -1
    if s.ecn_capable and kind == FK_ROCE:
        p.ecn = 2                           # ECT(0)
    return pi


# ---------------------------------------------------------------------------------------
# Requester / responder send side.

cdef inline void rto_event_at_deadline(Sim* s, int32_t qi) noexcept nogil:
    # The QP's one pending QT_RTO event (generation rto_gen), at its deadline.
    cdef Qp* q = &s.qps[qi]
    q.rto_pending = 1
    q.rto_event_ps = q.rto_deadline
    schedule(s, q.rto_deadline, EV_QP_TIMER, qi, QT_RTO | (<int64_t>q.rto_gen << 8))


cdef inline void rto_arm(Sim* s, int32_t qi) noexcept nogil:
    # (Re)start the retransmission timer: it expires rto_ps from now.
    # NOTE: lazy timer. Progress only moves the deadline; the one pending event, when it
    # fires early, moves itself to the deadline. Re-scheduling on every ACK would leave a
    # stale event in the event queue per ACK for a whole timeout (seconds with real NIC timers).
    cdef Qp* q = &s.qps[qi]
    if q.rto_ps == 0:
        return                              # IBA local ACK timeout 0: infinite
    q.rto_deadline = s.now + q.rto_ps
    q.rto_armed = 1
    if not q.rto_pending or q.rto_event_ps > q.rto_deadline:
        q.rto_gen += 1                      # an earlier event supersedes the pending one
        rto_event_at_deadline(s, qi)


cdef inline int32_t msg_holding(Sim* s, int32_t f, int32_t psn) noexcept nogil:
    # The message holding `psn`, searched from message f on (a QP's messages are in PSN
    # order); -1 past the last.
    while f >= 0 and psn >= s.flows[f].psn_start + s.flows[f].npkts:
        f = s.flows[f].next
    return f


cdef inline int32_t msg_at_snd_nxt(Sim* s, Qp* q) noexcept nogil:
    # The message holding PSN snd_nxt, searched from msg_cur (after a go-back, from the
    # oldest incomplete one); -1 when all are sent.
    cdef int32_t f = q.msg_cur
    if f < 0 or q.snd_nxt < s.flows[f].psn_start:
        f = q.msg_head
    return msg_holding(s, f, q.snd_nxt)


cdef inline int32_t roce_response_packet(Sim* s, int32_t qi) noexcept nogil:
    # Next READ RESPONSE from responder endpoint qi.
    cdef Qp* q = &s.qps[qi]
    cdef Flow* fl = &s.flows[q.rsp_flow]
    cdef int32_t k = q.rsp_nxt - fl.psn_start
    cdef int64_t offset = <int64_t>k * fl.mtu
    cdef int32_t payload = <int32_t>(fl.size - offset if fl.size - offset < fl.mtu else fl.mtu)
    cdef int32_t pi = roce_new(s, FK_ROCE, resp_opcode(k, fl.npkts), fl.dst, fl.src, q.peer,
                               fl.prio, payload)
    if pi < 0:
        return NO_PKT
    s.pkts[pi].flow = q.rsp_flow
    s.pkts[pi].psn = q.rsp_nxt
    s.pkts[pi].offset = offset
    if k == fl.npkts - 1:
        s.pkts[pi].flags = PF_LAST
    if offset + payload > fl.sent:
        fl.sent = offset + payload
        s.bytes_sent += payload
    if q.rsp_nxt < q.rsp_max:               # sent again after a re-issued READ
        q.retx_pkts += 1
        s.retx_pkts += 1
        s.bytes_retx += payload
        fl.retx += 1
    else:
        q.rsp_max = q.rsp_nxt + 1
    q.rsp_nxt += 1
    if q.rsp_nxt >= q.rsp_end:
        q.rsp_flow = -1
    return pi


cdef inline int32_t roce_request_packet(Sim* s, int32_t qi, int32_t f) noexcept nogil:
    # The packet at requester qi's snd_nxt, in message f; advances snd_nxt.
    cdef Qp* q = &s.qps[qi]
    cdef Flow* fl = &s.flows[f]
    cdef int32_t k = q.snd_nxt - fl.psn_start
    cdef int64_t offset = <int64_t>k * fl.mtu
    cdef int32_t payload, op, pi
    if fl.verb == VERB_READ:
        # A READ request for the rest of the message from PSN snd_nxt (RETH: its length).
        pi = roce_new(s, FK_ROCE, OP_READ_REQUEST, fl.src, fl.dst, q.peer, fl.prio, 0)
        if pi < 0:
            return NO_PKT
        s.pkts[pi].offset = offset
        q.snd_nxt = fl.psn_start + fl.npkts
    else:
        payload = <int32_t>(fl.size - offset if fl.size - offset < fl.mtu else fl.mtu)
        op = data_opcode(fl.verb, k, fl.npkts)
        pi = roce_new(s, FK_ROCE, op, fl.src, fl.dst, q.peer, fl.prio, payload)
        if pi < 0:
            return NO_PKT
        s.pkts[pi].offset = offset
        if k == fl.npkts - 1:
            s.pkts[pi].flags = PF_LAST
        if s.hpcc:
            # an empty INT header the switches fill (csrc/hpcc.pxd)
            s.pkts[pi].flags |= PF_INT
            s.pkts[pi].size += INT_BASE_BYTES
        if offset + payload > fl.sent:
            fl.sent = offset + payload
            s.bytes_sent += payload
        q.snd_nxt += 1
    s.pkts[pi].flow = f
    s.pkts[pi].psn = fl.psn_start + k
    fl.packets += 1
    return pi


cdef inline int32_t roce_next_packet(Sim* s, int32_t qi) noexcept nogil:
    # One frame from QP endpoint qi, or NO_PKT if it has nothing it may send now.
    cdef Qp* q = &s.qps[qi]
    cdef int32_t f, pi, psn
    cdef bint retx
    if q.rsp_flow < 0 and q.snd_nxt >= q.psn_end:
        return NO_PKT
    if q.next_tx_ps > s.now:
        if not q.wake_pending:
            q.wake_pending = 1
            schedule(s, q.next_tx_ps, EV_QP_TIMER, qi, QT_WAKE)
        return NO_PKT
    if q.rsp_flow >= 0:
        pi = roce_response_packet(s, qi)
    else:
        f = msg_at_snd_nxt(s, q)
        if f < 0:
            return NO_PKT
        if s.hpcc and s.flows[f].verb != VERB_READ and not hp_window_open(s, q):
            return NO_PKT                   # HPCC window full: the next ACK reactivates it
        q.msg_cur = f
        psn = q.snd_nxt
        retx = psn < q.snd_max
        pi = roce_request_packet(s, qi, f)
        if pi < 0:
            return NO_PKT
        if retx:
            q.retx_pkts += 1
            s.retx_pkts += 1
            s.bytes_retx += s.pkts[pi].payload
            s.flows[f].retx += 1
        if q.snd_nxt > q.snd_max:
            q.snd_max = q.snd_nxt
        if not q.rto_armed:
            rto_arm(s, qi)
    if pi < 0:
        return NO_PKT
    q.last_tx_ps = s.now
    q.last_tx_bytes = s.pkts[pi].size + WIRE_EXTRA_BYTES
    if q.rate_bps < q.line_bps:
        q.next_tx_ps = s.now + ser_ps(q.last_tx_bytes, q.rate_bps)
    dc_on_bytes(s, qi, s.pkts[pi].size)
    return pi


cdef inline bint roce_has_more(Sim* s, int32_t qi) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    return q.rsp_flow >= 0 or q.snd_nxt < q.psn_end


# ---------------------------------------------------------------------------------------
# Requester receive side: ACK, NAK, READ responses, timeouts.

cdef inline void complete_below(Sim* s, Qp* q, int32_t una) noexcept nogil:
    # Every message whose PSNs all lie below `una` is acknowledged: complete it (CQE).
    cdef Flow* fl
    while q.msg_head >= 0:
        fl = &s.flows[q.msg_head]
        if fl.psn_start + fl.npkts > una:
            break
        q.msg_head = fl.next
        complete_message(s, <int32_t>(fl - s.flows))


cdef inline void roce_advance_una(Sim* s, int32_t qi, int32_t una) noexcept nogil:
    # Everything below `una` is acknowledged: complete messages, re-arm or stop the RTO.
    cdef Qp* q = &s.qps[qi]
    if una <= q.snd_una:
        return
    q.snd_una = una
    q.retries = 0
    q.rto_ps = s.rto_initial_ps             # backoff is for consecutive timeouts only
    complete_below(s, q, una)
    if q.snd_nxt < q.snd_una:
        q.snd_nxt = q.snd_una
    if q.snd_una < q.snd_max:
        rto_arm(s, qi)
    else:
        q.rto_armed = 0                     # a pending event will find it stopped


cdef inline void roce_rx_ack(Sim* s, int32_t pi) noexcept nogil:
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t qi = pk.qp
    cdef Qp* q = &s.qps[qi]
    if pk.syndrome == SYN_NAK_SEQ:
        q.naks_rx += 1
        s.naks += 1
        roce_advance_una(s, qi, pk.psn)
        if pk.psn < q.snd_nxt:
            q.snd_nxt = pk.psn              # go back N
            q.msg_cur = -1
        qp_activate(s, qi)
    else:
        q.acks_rx += 1
        roce_advance_una(s, qi, pk.psn + 1)
        if s.hpcc:
            hp_on_ack(s, qi, pi)
            if not q.in_ring and q.snd_nxt < q.psn_end:
                qp_activate(s, qi)          # the window may have opened


cdef inline void roce_rto(Sim* s, int32_t qi, int32_t gen) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    if gen != q.rto_gen:
        return                              # superseded by an earlier event
    q.rto_pending = 0
    if not q.rto_armed:
        return
    if s.now < q.rto_deadline:              # progress since: wait for the new deadline
        rto_event_at_deadline(s, qi)
        return
    q.rto_armed = 0
    if q.snd_una >= q.snd_max:
        return
    q.timeouts += 1
    s.timeouts += 1
    q.retries += 1
    if q.retries > s.retry_limit:
        # Retry count exhausted (IBA 9.7.6.1.3, retry_cnt <= 7): the QP goes to the error
        # state; its outstanding messages never complete and it sends nothing more.
        s.qp_errors += 1
        q.snd_nxt = q.psn_end
        q.snd_una = q.psn_end
        q.snd_max = q.psn_end
        return
    q.rto_ps = q.rto_ps * 2 if q.rto_ps * 2 < s.rto_max_ps else s.rto_max_ps
    q.snd_nxt = q.snd_una
    q.msg_cur = -1
    q.nak_sent = 0
    rto_arm(s, qi)
    qp_activate(s, qi)


# ---------------------------------------------------------------------------------------
# Responder (and READ requester) receive side.

cdef inline void send_cnp(Sim* s, int32_t qi) noexcept nogil:
    # Notification point: CE seen on a frame for endpoint qi; tell its peer to slow down.
    cdef Qp* q = &s.qps[qi]
    cdef int32_t pi
    if s.now - q.last_cnp_ps < s.cnp_interval_ps:
        return
    q.last_cnp_ps = s.now
    pi = roce_new(s, FK_CNP, OP_CNP, q.host, s.qps[q.peer].host, q.peer, s.cnp_prio, 0)
    if pi < 0:
        return
    q.cnps_tx += 1
    s.cnps += 1
    nic_send(s, qi, pi)


cdef inline void send_ack(Sim* s, int32_t qi, int32_t psn, uint8_t syndrome, int32_t prio,
                          int32_t echo) noexcept nogil:
    # ACK/NAK of `psn`; `echo` >= 0: the data frame whose INT records the ACK carries back.
    cdef Qp* q = &s.qps[qi]
    cdef int32_t pi = roce_new(s, FK_ROCE_ACK, OP_ACK, q.host, s.qps[q.peer].host, q.peer,
                               s.ack_prio if s.ack_prio >= 0 else prio, 0)
    if pi < 0:
        return
    s.pkts[pi].psn = psn
    s.pkts[pi].syndrome = syndrome
    s.pkts[pi].offset = q.msn               # AETH MSN
    if echo >= 0 and s.pkts[echo].flags & PF_INT:
        hp_echo(s, pi, echo)
    nic_send(s, qi, pi)


cdef inline void discard(Sim* s, Packet* pk) noexcept nogil:
    # The receiver drops a data frame it cannot accept (out of order, or a duplicate).
    s.pkts_discarded += 1
    s.bytes_discarded += pk.payload


cdef inline void discard_copy(Sim* s, Qp* q, Packet* pk) noexcept nogil:
    # A copy of a PSN receiver q had already accepted: discarded, and a spurious
    # retransmission (its first copy was not lost).
    discard(s, pk)
    q.spurious += 1
    s.spurious += 1


cdef inline void roce_rx_data(Sim* s, int32_t pi) noexcept nogil:
    # A BTH data or request frame arrived for endpoint pk.qp. Returns with pi consumed
    # by the caller (freed there).
    cdef Packet* pk = &s.pkts[pi]
    cdef int32_t qi = pk.qp
    cdef Qp* q = &s.qps[qi]
    cdef Flow* fl = &s.flows[pk.flow]
    cdef int32_t op = pk.opcode
    if pk.ecn == 3:
        send_cnp(s, qi)
    if op >= OP_READ_RESP_FIRST and op <= OP_READ_RESP_ONLY:
        # READ responses at the requester: in order at snd_una, else re-issue the READ.
        if pk.psn == q.snd_una:
            q.nak_sent = 0
            deliver_payload(s, pk.flow, pk.payload)
            roce_advance_una(s, qi, pk.psn + 1)
        elif pk.psn > q.snd_una:
            discard(s, pk)
            if not q.nak_sent:
                q.nak_sent = 1
                q.snd_nxt = q.snd_una
                q.msg_cur = -1
                qp_activate(s, qi)
        else:
            discard_copy(s, q, pk)          # a response sent again though the first arrived
        return
    if pk.psn == q.epsn:
        q.nak_sent = 0
        if op == OP_READ_REQUEST:
            s.pkts_delivered += 1
            q.epsn = fl.psn_start + fl.npkts
            q.rsp_flow = pk.flow
            q.rsp_nxt = pk.psn
            q.rsp_end = q.epsn
            qp_activate(s, qi)
            return
        q.epsn += 1
        deliver_payload(s, pk.flow, pk.payload)
        q.unacked += 1
        if pk.flags & PF_LAST:
            q.msn += 1
        if q.unacked >= s.ack_every or pk.flags & PF_LAST:
            q.unacked = 0
            send_ack(s, qi, pk.psn, SYN_ACK, pk.prio, pi)
    elif pk.psn > q.epsn:
        discard(s, pk)
        if not q.nak_sent:
            q.nak_sent = 1
            send_ack(s, qi, q.epsn, SYN_NAK_SEQ, pk.prio, -1)
    elif op == OP_READ_REQUEST:
        # A re-issued READ: stream again from the requested PSN.
        s.pkts_delivered += 1
        q.rsp_flow = pk.flow
        q.rsp_nxt = pk.psn
        q.rsp_end = fl.psn_start + fl.npkts
        qp_activate(s, qi)
    else:
        discard_copy(s, q, pk)              # duplicate: discard and re-ACK
        send_ack(s, qi, q.epsn - 1, SYN_ACK, pk.prio, -1)
