# ECN marking at switch egress (RFC 3168; RED-style profile as used for DCQCN,
# Zhu et al., SIGCOMM 2015, section 3.1).
#
# What it models: when an ECN-capable frame (ECT(0) or ECT(1)) is admitted to an egress
# queue holding q bytes, it is marked CE with probability 0 for q <= Kmin,
# Pmax x (q - Kmin) / (Kmax - Kmin) for Kmin < q < Kmax, and 1 for q >= Kmax. The
# random draw comes from the port's own seeded stream, so marks are reproducible and
# independent of other ports' traffic.
#
# Limits: instantaneous queue length (no averaging, as DCQCN switches do); marking on
# enqueue, not dequeue.
from core cimport *

cdef enum:
    ECN_NOT_ECT = 0
    ECN_ECT1 = 1
    ECN_ECT0 = 2
    ECN_CE = 3


cdef inline bint ecn_should_mark(Sim* s, Port* pt, Queue* q, Packet* pk) noexcept nogil:
    cdef double p
    if q.kmax <= 0 or (pk.ecn != ECN_ECT0 and pk.ecn != ECN_ECT1):
        return 0
    if q.bytes <= q.kmin:
        return 0
    if q.bytes >= q.kmax:
        return 1
    p = q.pmax * <double>(q.bytes - q.kmin) / <double>(q.kmax - q.kmin)
    return rng_uniform(&pt.rng) < p
