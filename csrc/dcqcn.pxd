# DCQCN reaction point: the per-QP rate limiter driven by CNPs (Zhu et al., "Congestion
# Control for Large-Scale RDMA Deployments", SIGCOMM 2015, section 3.2 and figure 7).
#
# What it models. On a CNP: target RT = RC; RC = RC x (1 - alpha/2) (never below
# dc_min_dec x RC nor dc_min_bps); alpha = (1 - g) alpha + g; the rate-increase timer and
# byte counter restart. Without CNPs, every dc_alpha_ps: alpha = (1 - g) alpha. Every
# dc_timer_ps (timer events T) and every dc_bytes sent (byte-counter events B) the rate
# rises: fast recovery RC = (RT + RC) / 2 while both counts are <= F; hyper increase
# RT += i x R_HAI (i = min(T, B) - F) when both exceed F; additive RT += R_AI otherwise,
# then RC = (RT + RC) / 2. Rates are capped at the port's line rate; at line rate the
# timers stop. Every rate change is logged (time, QP, rate) for the per-QP rate series.
#
# Limits: the rate limiter paces frame starts of one QP (wire bytes at RC); it does not
# model NIC rate-limiter granularity. Parameters and defaults: see ethlink/scenario.py
# (PROTOCOLS.md: g = 1/256, F = 5, B = 10 MB, T = 55 us).
from libc.stdlib cimport realloc
from core cimport *


cdef inline void rate_log(Sim* s, int32_t qi) noexcept nogil:
    cdef int64_t* p
    if s.rate_n + 3 > s.rate_cap:
        p = <int64_t*>realloc(s.rate_log, 2 * s.rate_cap * sizeof(int64_t))
        if p == NULL:
            s.error = 1
            return
        s.rate_log = p
        s.rate_cap *= 2
    s.rate_log[s.rate_n] = s.now
    s.rate_log[s.rate_n + 1] = qi
    s.rate_log[s.rate_n + 2] = s.qps[qi].rate_bps
    s.rate_n += 3


cdef inline void dc_arm(Sim* s, int32_t qi) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    q.cc_gen += 1
    schedule(s, s.now + s.dc_alpha_ps, EV_QP_TIMER, qi, QT_ALPHA | (<int64_t>q.cc_gen << 8))
    schedule(s, s.now + s.dc_timer_ps, EV_QP_TIMER, qi, QT_INCREASE | (<int64_t>q.cc_gen << 8))


cdef inline void dc_on_cnp(Sim* s, int32_t qi) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    cdef int64_t cut, floor
    q.cnps_rx += 1
    if not s.dcqcn:
        return
    q.target_bps = q.rate_bps
    cut = <int64_t>(<double>q.rate_bps * (1.0 - q.alpha / 2.0))
    floor = <int64_t>(<double>q.rate_bps * s.dc_min_dec)
    if cut < floor:
        cut = floor
    if cut < s.dc_min_bps:
        cut = s.dc_min_bps
    q.rate_bps = cut
    q.alpha = (1.0 - s.dc_g) * q.alpha + s.dc_g
    q.t_count = 0
    q.b_count = 0
    q.bytes_since = 0
    dc_arm(s, qi)
    rate_log(s, qi)


cdef inline void dc_increase(Sim* s, int32_t qi) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    cdef int32_t lo = q.t_count if q.t_count < q.b_count else q.b_count
    if q.t_count > s.dc_f and q.b_count > s.dc_f:
        q.target_bps += (lo - s.dc_f) * s.dc_rhai_bps
    elif q.t_count > s.dc_f or q.b_count > s.dc_f:
        q.target_bps += s.dc_rai_bps
    if q.target_bps > q.line_bps:
        q.target_bps = q.line_bps
    q.rate_bps = (q.target_bps + q.rate_bps) // 2
    if q.line_bps - q.rate_bps < 1000:       # within 1 kb/s: back at line rate
        q.rate_bps = q.line_bps
    rate_log(s, qi)
    retime(s, qi)


cdef inline void retime(Sim* s, int32_t qi) noexcept nogil:
    # A faster rate shortens the wait for the frame the limiter is holding back: the gap
    # after the last frame is recomputed at the new rate (as a token bucket would).
    cdef Qp* q = &s.qps[qi]
    cdef int64_t t
    if q.next_tx_ps <= s.now:
        return
    t = q.last_tx_ps + ser_ps(q.last_tx_bytes, q.rate_bps)
    if t < s.now:
        t = s.now
    if t < q.next_tx_ps:
        q.next_tx_ps = t
        if q.wake_pending:
            schedule(s, t, EV_QP_TIMER, qi, QT_WAKE)


cdef inline void dc_on_bytes(Sim* s, int32_t qi, int32_t nbytes) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    if not s.dcqcn or q.rate_bps >= q.line_bps:
        return
    q.bytes_since += nbytes
    if q.bytes_since >= s.dc_bytes:
        q.bytes_since -= s.dc_bytes
        q.b_count += 1
        dc_increase(s, qi)


cdef inline void dc_timer(Sim* s, int32_t qi, int32_t kind, int32_t gen) noexcept nogil:
    cdef Qp* q = &s.qps[qi]
    if gen != q.cc_gen:
        return                              # restarted by a later CNP
    if kind == QT_ALPHA:
        q.alpha = (1.0 - s.dc_g) * q.alpha
        if q.rate_bps < q.line_bps:
            schedule(s, s.now + s.dc_alpha_ps, EV_QP_TIMER, qi, QT_ALPHA | (<int64_t>gen << 8))
    elif q.rate_bps < q.line_bps:
        q.t_count += 1
        dc_increase(s, qi)
        if q.rate_bps < q.line_bps:
            schedule(s, s.now + s.dc_timer_ps, EV_QP_TIMER, qi, QT_INCREASE | (<int64_t>gen << 8))
