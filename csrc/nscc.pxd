# NSCC: the network-signal-based congestion control of the Ultra Ethernet transport
# (UET 1.0, section 3.6.13), sender side: one window per UET queue pair (Qp.uet_cwnd),
# moved by ECN marks and queueing delay together.
#
# What it models. Every ACK_CC gives an RTT sample (now minus the send time of the packet
# it acknowledges, ACK_PSN_OFFSET) and the ECN_MARKED echo. The queueing delay is the RTT
# minus the lowest RTT seen (base RTT); an EWMA of it is the average delay. Per ACK:
#   not marked, delay >= target  -> fair increase (a constant per acknowledged byte)
#   not marked, delay <  target  -> proportional increase (more the further below target),
#                                   or fast increase (+half the acknowledged bytes) after a
#                                   window's worth of bytes at near-zero delay
#   marked,     delay >= target  -> multiplicative decrease, at most once per base RTT:
#                                   cwnd x max(1 - gamma (avg - target) / avg, 0.5)
#   marked,     delay <  target  -> nothing (htsim: "just switch path")
# Increases accumulate and are applied when enough bytes were acknowledged or a period
# passed (cwnd += min(adjust_bytes, inc / cwnd)); an additive eta step is added once per
# period. Quick adapt: at the end of each period of base RTT + target, if a NACK arrived
# (trimmed packet) or the average delay exceeds the quick-adapt threshold, the window
# drops to the bytes acknowledged in that period. A NACK also takes the trimmed packet's
# bytes off the window. The window stays within [MTU, maxwnd]; it starts at maxwnd.
#
# Sources. Where UET 1.0 leaves a choice, this follows UEC's reference htsim (csg-htsim
# `sim/uec.cpp`, as stored in the public code index): UecSrc::updateCwndOnAck_NSCC (the
# four cases and the adjustment), quick_adapt, fair_increase, proportional_increase,
# fast_increase, multiplicative_decrease, fulfill_adjustment, updateCwndOnNack_NSCC,
# update_base_rtt, update_delay (the EWMA with its two special cases) and initNsccParams
# (the parameters, scaled from a 100 Gb/s, 12 us reference network: target queueing delay
# 6 us, quick-adapt threshold 4 x target, alpha = 4 a b MSS / target, fair increase
# 5 a, eta 0.15 MSS a, gamma 0.8, delay EWMA gain 0.0125, adjustment period 12 us and
# 16000 b bytes, maxwnd 1.5 BDP; a = network BDP / reference BDP, b = target / 12 us).
# ethlink.sim computes the scaled values (ethlink.scenario's [uet.nscc] overrides them).
#
# Limits: sender-based NSCC only (no receiver credit, RCCC); the acknowledged bytes are
# counted in full-MTU packets (ACK_CC's rcvd_bytes is not carried); the window counts
# packets in flight x MTU; no path selection by ECN (htsim's entropy "skip" bitmap);
# htsim's mark_packet_for_retransmission also shrinks the window per retransmitted packet,
# which this model does only through the NACK (once per trimmed packet).
from core cimport *


cdef inline void nscc_clamp(Qp* q, double cwnd) noexcept nogil:
    if cwnd > <double>q.nscc_maxwnd:
        cwnd = <double>q.nscc_maxwnd
    if cwnd < <double>q.mtu:
        cwnd = <double>q.mtu
    q.uet_cwnd = <int64_t>cwnd
    if q.uet_cwnd < q.nscc_cwnd_min:
        q.nscc_cwnd_min = q.uet_cwnd


cdef inline bint nscc_quick_adapt(Sim* s, Qp* q, bint is_loss) noexcept nogil:
    # [UecSrc::quick_adapt] At a period's end: fall back to what the period delivered.
    if s.now > q.nscc_qa_end:
        if q.nscc_qa_end != 0 and (q.nscc_trigger_qa or is_loss or q.nscc_avg_delay > <double>s.nscc_qa_ps):
            if q.uet_cwnd >= q.nscc_achieved:
                q.uet_cwnd = q.nscc_achieved if q.nscc_achieved > q.mtu else q.mtu
                if q.uet_cwnd < q.nscc_cwnd_min:
                    q.nscc_cwnd_min = q.uet_cwnd
                q.nscc_to_ignore = q.uet_inflight * q.mtu
                q.nscc_ignored = 0
                q.nscc_trigger_qa = 0
                q.nscc_qas += 1
                s.nscc_qa_total += 1
                return 1
        q.nscc_achieved = 0
        q.nscc_qa_end = s.now + q.nscc_base_rtt + s.nscc_target_ps
    return 0


cdef inline void nscc_on_ack(Sim* s, int32_t qi, int64_t rtt, bint marked, int64_t newly) noexcept nogil:
    # An ACK_CC at UET sender qi: `rtt` the sample of the packet it acknowledges (-1: none,
    # that packet was no longer in flight), `newly` the bytes it newly acknowledged.
    cdef Qp* q = &s.qps[qi]
    cdef double cwnd, delay, d, avg
    q.nscc_achieved += newly
    q.nscc_received += newly
    q.nscc_ignored += newly
    # [update_base_rtt, update_delay]
    if rtt >= 0 and rtt < q.nscc_base_rtt:
        q.nscc_base_rtt = rtt
        q.nscc_maxwnd = <int64_t>(s.nscc_maxwnd_bdp * <double>rtt * <double>q.line_bps / 8e12)
    if rtt >= q.nscc_base_rtt:
        d = <double>(rtt - q.nscc_base_rtt)
        if not marked and d > <double>s.nscc_target_ps:
            q.nscc_avg_delay = s.nscc_delay_alpha * <double>q.nscc_base_rtt * 0.25 \
                + (1 - s.nscc_delay_alpha) * q.nscc_avg_delay
        else:
            q.nscc_avg_delay = s.nscc_delay_alpha * d + (1 - s.nscc_delay_alpha) * q.nscc_avg_delay
        delay = d
    else:
        delay = q.nscc_avg_delay
    if q.nscc_ignored < q.nscc_to_ignore and marked:
        return                              # marks of data sent before the last quick adapt
    if nscc_quick_adapt(s, q, 0):
        return
    cwnd = <double>q.uet_cwnd
    if not marked:
        if delay < <double>s.nscc_target_ps:
            # [proportional_increase, fast_increase]
            if delay < <double>s.nscc_fast_ps:
                q.nscc_fi_count += newly
                if q.nscc_fi_count > q.uet_cwnd or q.nscc_increase:
                    cwnd += 0.5 * <double>newly
                    q.nscc_increase = 1
                    nscc_clamp(q, cwnd)
                    return
            else:
                q.nscc_fi_count = 0
            q.nscc_increase = 0
            q.nscc_inc += s.nscc_alpha * (<double>s.nscc_target_ps - delay) * <double>newly
        q.nscc_inc += s.nscc_fi * <double>q.mtu * <double>newly       # [fair_increase]
    elif delay >= <double>s.nscc_target_ps:
        # [multiplicative_decrease]
        q.nscc_increase = 0
        q.nscc_fi_count = 0
        avg = q.nscc_avg_delay
        if avg > <double>s.nscc_target_ps and s.now - q.nscc_last_dec > q.nscc_base_rtt:
            d = 1 - s.nscc_gamma * (avg - <double>s.nscc_target_ps) / avg
            cwnd *= d if d > 0.5 else 0.5
            q.nscc_last_dec = s.now
            q.nscc_mds += 1
            s.nscc_md_total += 1
    if q.nscc_received > s.nscc_adjust_bytes or s.now - q.nscc_last_adjust > s.nscc_period_ps:
        # [fulfill_adjustment]
        d = q.nscc_inc / cwnd
        cwnd += d if d < <double>s.nscc_adjust_bytes else <double>s.nscc_adjust_bytes
        q.nscc_inc = 0
        q.nscc_received = 0
        q.nscc_last_adjust = s.now
    if s.now - q.nscc_last_eta > s.nscc_period_ps:
        cwnd += s.nscc_eta
        q.nscc_last_eta = s.now
    nscc_clamp(q, cwnd)


cdef inline void nscc_on_nack(Sim* s, int32_t qi, int64_t nacked) noexcept nogil:
    # [updateCwndOnNack_NSCC] A trimmed packet: its bytes off the window, quick adapt due.
    cdef Qp* q = &s.qps[qi]
    nscc_clamp(q, <double>(q.uet_cwnd - nacked))
    q.nscc_trigger_qa = 1
    if q.nscc_ignored >= q.nscc_to_ignore:
        nscc_quick_adapt(s, q, 1)
