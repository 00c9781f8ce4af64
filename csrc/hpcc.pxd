# HPCC: High Precision Congestion Control (Li et al., "HPCC: High Precision Congestion
# Control", SIGCOMM 2019), over the RoCEv2 RC transport of csrc/roce.pxd.
#
# What it models. A RoCE data frame (WRITE/SEND) of an HPCC run leaves its NIC with an
# empty INT header; every switch egress it crosses appends one INT record (the paper's
# INT metadata): the time the frame starts on the link, the bytes that port has sent (this frame
# included), the bytes left in the frame's egress queue and the link rate (hp_push, called
# from engine.pyx tx_start). The frame grows by INT_HOP_BYTES per record, as INT-MD does.
# The receiver ACKs every packet (HPCC needs per-packet feedback; ethlink.scenario makes
# roce.ack_every 1) and copies the records into the ACK (hp_echo). On each ACK the sender
# (hp_on_ack) runs the paper's Algorithm 1:
#   per hop i, against the records of the previous ACK L:
#     txRate = (tx_bytes - L.tx_bytes) / (ts - L.ts)
#     u_i    = min(qlen, L.qlen) / (B_i x T) + txRate / B_i
#   U  = the largest u_i, tau its ts - L.ts (at most T); U = (1 - tau/T) U + (tau/T) u
#   if U >= eta or incStage >= maxStage:  W = Wc / (U / eta) + W_AI  (multiplicative step)
#   else:                                  W = Wc + W_AI              (additive step)
#   Wc and incStage are committed once per RTT only: when the ACK covers the first PSN
#   sent after the last commit (lastUpdateSeq); other ACKs set W from the same Wc
#   (the paper's "fast reaction" to every ACK).
# The QP sends while its payload bytes in flight (snd_nxt - snd_una, in frames of the path
# MTU) are below W (roce.pxd roce_next_packet asks hp_window_open), and paces its frames at
# R = W / T through the rate limiter DCQCN also uses (Qp.rate_bps, next_tx_ps, retime).
#
# Choices the paper leaves open follow HPCC's ns-3 model (alibaba-edu/High-Precision-
# Congestion-Control, simulation/src/point-to-point/model/rdma-hw.cc UpdateRateHp and
# rdma-queue-pair.cc): U starts at 1; the first ACK only stores its records; the queue
# term uses the smaller qlen of the two samples; the window is capped at W_init = line
# rate x T and floored at min_rate x T (ns-3 MinRate, 100 Mb/s); records are taken after
# the frame left its queue (ns-3 switch-node.cc, on dequeue); at most INT_MAX_HOPS
# (5, ns-3 IntHeader::maxHop) records per frame, further switches add none.
# Defaults (ethlink/scenario.py Hpcc): eta 0.95 and maxStage 5, the paper's values; W_AI
# = W_init (1 - eta) / N, the paper's rule for N expected concurrent flows, with N = 100:
# line rate x T / 2000 (HPCC's simulation/run.py uses a rate step of line / 2500, 40 Mb/s
# at 100 Gb/s, and MI_THRESH 0 by default: a multiplicative step on every update).
#
# Limits: the engine computes on the exact record values (ps, bytes); the wire format
# (ethlink/frames/fields.py HPCC_INT) carries them at its field widths. Only WRITE and SEND
# data frames carry INT: READ responses are not window-controlled (the responder streams
# them at line rate, as without HPCC). The queue length is that of the frame's own
# priority at the egress port (what the trace's TX_START row shows), not of all priorities.
# NAKs and re-ACKs of duplicates carry no records. HPCC assumes a flow keeps one path: with
# per-packet spraying consecutive ACKs may carry records of different switches, which the
# sender compares hop by hop all the same (as HPCC's ns-3 model would).
from libc.string cimport memcpy
from core cimport *
from dcqcn cimport rate_log, retime
from nic cimport qp_activate

cdef enum:
    INT_BASE_BYTES = 4          # INT header before the records (fields.py HPCC_INT)
    INT_HOP_BYTES = 16          # one record (fields.py HPCC_INT_HOP)


cdef inline void hp_push(Sim* s, int32_t port, int32_t pi) noexcept nogil:
    # Switch egress `port` starts frame pi: append its INT record (the frame grows).
    cdef IntStack* st = &s.hp_int[pi]
    cdef Packet* pk = &s.pkts[pi]
    cdef IntRec* r
    if st.n >= INT_MAX_HOPS:
        return
    r = &st.hop[st.n]
    st.n += 1
    pk.size += INT_HOP_BYTES
    r.ts_ps = s.now
    r.tx_bytes = s.ports[port].tx_bytes + pk.size
    r.qlen = s.queues[port * NPRIO + pk.prio].bytes
    r.rate_bps = s.ports[port].rate_bps
    s.hp_records += 1


cdef inline void hp_echo(Sim* s, int32_t ack_pi, int32_t data_pi) noexcept nogil:
    # The receiver copies the data frame's records into its ACK (which grows with them).
    cdef IntStack* src = &s.hp_int[data_pi]
    memcpy(&s.hp_int[ack_pi], src, sizeof(IntStack))
    s.pkts[ack_pi].flags |= PF_INT
    s.pkts[ack_pi].size += INT_BASE_BYTES + INT_HOP_BYTES * <int32_t>src.n


cdef inline bint hp_window_open(Sim* s, Qp* q) noexcept nogil:
    # Algorithm 1's sender: bytes in flight must stay below W.
    return <int64_t>(q.snd_nxt - q.snd_una) * q.mtu < q.hp_w


cdef inline void hp_set_rate(Sim* s, int32_t qi) noexcept nogil:
    # R = W / T, at most the line rate; logged and applied to a waiting frame when it changes.
    cdef Qp* q = &s.qps[qi]
    cdef int64_t r = <int64_t>(<double>q.hp_w * 8.0e12 / <double>s.hp_t_ps)
    if r > q.line_bps:
        r = q.line_bps
    if r < 1:
        r = 1
    if r == q.rate_bps:
        return
    q.rate_bps = r
    rate_log(s, qi)
    retime(s, qi)


cdef inline double hp_hop_u(IntRec* now, IntRec* prev, int64_t t_ps) noexcept nogil:
    # Normalized inflight of one hop between two samples (Algorithm 1 MeasureInflight):
    # queue in units of the hop's BDP plus the measured tx rate over the link rate.
    cdef int64_t tau = now.ts_ps - prev.ts_ps
    cdef int64_t qlen = now.qlen if now.qlen < prev.qlen else prev.qlen
    cdef double tx_rate
    if tau <= 0:
        return -1.0                          # same sample twice: no information
    tx_rate = <double>(now.tx_bytes - prev.tx_bytes) * 8.0e12 / <double>tau
    return <double>qlen * 8.0e12 / (<double>now.rate_bps * <double>t_ps) + tx_rate / <double>now.rate_bps


cdef inline void hp_on_ack(Sim* s, int32_t qi, int32_t pi) noexcept nogil:
    # Sender: ACK pi (for PSN pk.psn) echoes INT records; update U, W and the rate.
    cdef Qp* q = &s.qps[qi]
    cdef IntStack* ack = &s.hp_int[pi]
    cdef IntStack* prev = &s.hp_prev[qi]
    cdef int64_t i, tau, dt = 0, t = s.hp_t_ps, w
    cdef double u, umax = 0.0
    cdef bint per_rtt, mi
    if not (s.pkts[pi].flags & PF_INT) or ack.n == 0:
        return
    if not q.hp_ready or ack.n != prev.n:
        # the first ACK (or a path of another length): its records become the reference
        memcpy(prev, ack, sizeof(IntStack))
        q.hp_ready = 1
        q.hp_last_psn = q.snd_nxt
        return
    for i in range(ack.n):
        u = hp_hop_u(&ack.hop[i], &prev.hop[i], t)
        if u > umax:
            umax = u
            dt = ack.hop[i].ts_ps - prev.hop[i].ts_ps
    memcpy(prev, ack, sizeof(IntStack))
    if dt == 0:
        return                               # no hop gave a new sample
    if dt > t:
        dt = t
    q.hp_u = (q.hp_u * <double>(t - dt) + umax * <double>dt) / <double>t
    per_rtt = s.pkts[pi].psn + 1 > q.hp_last_psn
    mi = q.hp_u >= s.hp_eta or q.hp_stage >= s.hp_max_stage
    if mi:
        if q.hp_u > 0:
            w = <int64_t>(<double>q.hp_wc * s.hp_eta / q.hp_u) + s.hp_w_ai
        else:
            w = s.hp_w_init
    else:
        w = q.hp_wc + s.hp_w_ai
    if w > s.hp_w_init:
        w = s.hp_w_init
    if w < s.hp_w_floor:
        w = s.hp_w_floor
    if per_rtt:
        q.hp_wc = w
        q.hp_stage = 0 if mi else q.hp_stage + 1
        q.hp_last_psn = q.snd_nxt
    q.hp_w = w
    if w < q.hp_w_min:
        q.hp_w_min = w
    q.hp_updates += 1
    hp_set_rate(s, qi)
