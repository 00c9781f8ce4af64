"""DCQCN (Zhu et al., SIGCOMM 2015): the notification point at the receiver and the
reaction point's rate, checked from the per-QP rate samples and the endpoint trace.

The rules replayed here are the paper's (section 3.2, figure 7) with the NVIDIA knobs
(min_dec, min_rate), as PROTOCOLS.md states them:

- NP: a CE-marked data frame makes the receiver send a CNP to the sending QP unless it
  sent that QP one less than cnp_interval ago.
- RP: a CNP cuts the rate: RT = RC, RC = RC (1 - alpha/2), never below min_dec x RC nor
  min_rate; then alpha = (1 - g) alpha + g. alpha starts at 1. Without CNPs, alpha decays
  by (1 - g) every alpha_timer (the timer restarts at each CNP and stops once the rate is
  back at line rate). The first F increases after a cut are fast recovery,
  RC = (RT + RC) / 2; increases continue until the rate is back at line rate.

A cut is a rate sample below the QP's previous rate (line rate before the first).
"""
from __future__ import annotations

import numpy as np
import pytest

from ethlink import scenarios
from ethlink import trace as T
from ethlink.sim import Simulation
from ethlink.topology import SWITCH

EV = {n: i for i, n in enumerate(T.EVENT_NAMES)}
FK = {n: i for i, n in enumerate(T.FRAME_KINDS)}
LINE = 400 * 10**9
CE = 3


def run(overrides=(), level=None):
    sc = scenarios.load("incast-dcqcn", list(overrides))
    sim = Simulation(sc, trace=level)
    parts = []
    res = sim.run(trace_sink=parts.append)
    return sim, res, (np.concatenate(parts) if parts else None)


@pytest.fixture(scope="module")
def default_run():
    return run(level="endpoints")


def per_qp(samples):
    """{qp: (times, rates, previous rates)} from (time_ps, qp, rate_bps) rows."""
    out = {}
    for q in np.unique(samples[:, 1]):
        m = samples[samples[:, 1] == q]
        out[int(q)] = (m[:, 0], m[:, 2], np.concatenate([[LINE], m[:-1, 2]]))
    return out


def test_rates_stay_between_min_rate_and_line_rate(default_run):
    sim, res, _ = default_run
    rs = res.rate_samples
    assert len(rs) > 0
    assert rs[:, 2].max() <= LINE
    assert rs[:, 2].min() >= sim.scenario.dcqcn.min_rate_bps
    assert np.all(np.diff(rs[:, 0]) >= 0), "samples are logged in time order"


def test_min_rate_floor_is_reached_and_held():
    """With min_rate at 100G the cuts that would go lower stop exactly there."""
    _, res, _ = run(['dcqcn.min_rate="100G"'])
    rs = res.rate_samples
    assert rs[:, 2].min() == 100 * 10**9
    assert res.summary["flows_completed"] == 64


def test_cuts_happen_exactly_when_cnps_arrive(default_run):
    sim, res, tr = default_run
    cnp_rx = tr[(tr["event"] == EV["deliver"]) & (tr["kind"] == FK["cnp"])]
    n = 0
    for q, (times, rates, prev) in per_qp(res.rate_samples).items():
        cut = rates < prev
        assert np.array_equal(times[cut], cnp_rx["time_ps"][cnp_rx["qp"] == q]), f"QP {q}"
        assert res.qps["cnps_rx"][q] == cut.sum()
        n += int(cut.sum())
    assert n == res.summary["cnps"] == len(cnp_rx) > 0


def alpha_bounds(times, rates, cuts, g, alpha_timer):
    """alpha just before each cut, as (lowest, highest) it can be: the alpha timer's
    firings at (previous cut + k x alpha_timer) strictly before the cut always count; one
    at exactly the cut's ps may run before or after it. The chain stops after a firing
    that finds the rate back at line rate."""
    lo = hi = 1.0
    last = None
    out = []
    for ci in cuts:
        t = times[ci]
        if last is not None:
            bounds = []
            for a, inclusive in ((lo, True), (hi, False)):
                a = (1 - g) * a + g                         # the previous CNP's raise
                k = 1
                while last + k * alpha_timer < t or (inclusive and last + k * alpha_timer == t):
                    a *= 1 - g
                    j = np.searchsorted(times, last + k * alpha_timer, side="left") - 1
                    if rates[j] >= LINE:
                        break
                    k += 1
                bounds.append(a)
            lo, hi = bounds
        out.append((lo, hi))
        last = t
    return out


@pytest.mark.parametrize("overrides", [(), ("dcqcn.g=0.0625", "dcqcn.min_dec=0.1", 'dcqcn.alpha_timer="20us"')])
def test_cut_keeps_at_least_min_dec_and_at_most_one_minus_alpha_half(overrides):
    """Every cut RC' of a rate RC satisfies max(min_dec RC, min_rate) <= RC' <=
    max(RC (1 - alpha/2), min_dec RC, min_rate), with alpha replayed from the QP's
    history; the first cut of a QP (alpha = 1) halves the line rate."""
    sim, res, _ = run(overrides)
    dc = sim.scenario.dcqcn

    def rule(prev, alpha):
        return max(int(prev * (1 - alpha / 2)), int(prev * dc.min_dec), dc.min_rate_bps)

    n = 0
    for q, (times, rates, prev) in per_qp(res.rate_samples).items():
        cuts = np.nonzero(rates < prev)[0]
        assert rates[cuts[0]] == LINE // 2, f"QP {q}: first cut from line rate with alpha 1"
        for ci, (a_lo, a_hi) in zip(cuts, alpha_bounds(times, rates, cuts, dc.g, dc.alpha_timer_ps)):
            p, r = int(prev[ci]), int(rates[ci])
            assert r >= int(p * dc.min_dec) and r >= dc.min_rate_bps
            assert rule(p, a_hi) - 1 <= r <= rule(p, a_lo) + 1, (q, ci, p, r, a_lo, a_hi)
            n += 1
    assert n == res.summary["cnps"] > 0


def test_fast_recovery_then_back_to_line_rate_without_cnps(default_run):
    """After a cut from RC to RC', the first F increases move halfway to the target RC:
    RC' <- (RC + RC') / 2. After a QP's last CNP its rate only rises, and the run ends with
    every QP back at line rate."""
    sim, res, _ = default_run
    F = sim.scenario.dcqcn.f
    checked = 0
    for q, (times, rates, prev) in per_qp(res.rate_samples).items():
        cuts = np.nonzero(rates < prev)[0]
        for ci in cuts:
            target, cur = int(prev[ci]), int(rates[ci])
            for j in range(ci + 1, min(ci + 1 + F, len(rates))):
                if rates[j] < prev[j]:
                    break                                   # cut again
                cur = (target + cur) // 2
                if LINE - cur < 1000:
                    cur = LINE
                assert rates[j] == cur, f"QP {q}: increase {j - ci} after a cut"
                checked += 1
        after = rates[cuts[-1]:]
        assert np.all(np.diff(after) >= 0), f"QP {q}: rate fell without a CNP"
        assert rates[-1] == LINE
    assert checked > 0
    roce = res.qps["transport"] == 1                 # Transport TR_ROCE (csrc/core.pxd)
    assert np.all(res.qps["rate_bps"][roce] == res.qps["line_bps"][roce])


@pytest.mark.parametrize("interval", [None, "20us"])
def test_cnps_per_qp_spaced_by_the_cnp_interval(interval):
    """Replay the NP over the CE-marked frames delivered at the receiver: a CNP exactly at
    each CE arrival at least cnp_interval after the QP's previous CNP, none otherwise."""
    overrides = [f'roce.cnp_interval="{interval}"'] if interval else []
    sim, res, tr = run(overrides, level="endpoints")
    gap = sim.scenario.roce.cnp_interval_ps
    assert gap == (20_000_000 if interval else 50_000_000)
    h0 = sim.compiled.nodes["first_port"][sim.compiled.host_node[0]]
    cnp = tr[(tr["event"] == EV["enqueue"]) & (tr["kind"] == FK["cnp"]) & (tr["port"] == h0)]
    ce = tr[(tr["event"] == EV["deliver"]) & (tr["kind"] == FK["roce"]) & (tr["port"] == h0) & (tr["ecn"] == CE)]
    assert len(cnp) == res.summary["cnps"] > 0
    qps = res.qps
    for q in np.unique(cnp["qp"]):
        sent = cnp["time_ps"][cnp["qp"] == q]
        assert np.all(np.diff(sent) >= gap)
        want, last = [], None
        for t in ce["time_ps"][ce["qp"] == qps["peer"][q]].tolist():
            if last is None or t - last >= gap:
                want.append(t)
                last = t
        assert sent.tolist() == want, f"QP {q}"
        assert qps["cnps_tx"][qps["peer"][q]] == len(sent)


def test_rate_limiter_paces_each_qp(default_run):
    """A QP builds its next frame no sooner than its last frame's wire bytes (frame +
    preamble + IFG) at its rate allow; a rate rise in between shortens the wait, so the
    bound uses the highest rate the QP had over the gap. A QP at line rate is paced by
    the port itself, which the same bound expresses."""
    sim, res, tr = default_run
    c = sim.compiled
    rs = res.rate_samples
    checked = exact = 0
    for f in range(len(res.flows)):
        q = int(res.flows["qp"][f])
        port = c.nodes["first_port"][c.host_node[res.flows["src"][f]]]
        built = tr[(tr["port"] == port) & (tr["event"] == EV["enqueue"]) & (tr["kind"] == FK["roce"])]
        times, rates = rs[rs[:, 1] == q, 0], rs[rs[:, 1] == q, 2]
        for i in range(len(built) - 1):
            b0, b1 = int(built["time_ps"][i]), int(built["time_ps"][i + 1])
            j = np.searchsorted(times, b0, side="right") - 1
            top = max([int(rates[j]) if j >= 0 else LINE] + rates[(times > b0) & (times <= b1)].tolist())
            need = -(-(int(built["size"][i]) + 20) * 8 * 10**12 // top)
            assert b1 - b0 >= need, f"flow {f}: frames {i}, {i + 1} built {b1 - b0} ps apart, rate allows {need}"
            checked += 1
            exact += b1 - b0 == need
    assert checked > 0 and exact > checked // 2, "most frames leave exactly when the limiter allows"


@pytest.mark.parametrize("overrides", [(), ("ecn.pmax=1.0", 'ecn.kmin="50KiB"', 'ecn.kmax="1MiB"')])
def test_ecn_marks_follow_the_red_profile(overrides):
    """Switch egress marking (RFC 3168 CE on ECT frames): never at or below Kmin, always at
    or above Kmax, in between with probability Pmax (q - Kmin) / (Kmax - Kmin), q the
    queue's bytes before the frame joins it. The marks in the band are checked against
    that probability as a binomial count (|z| < 4)."""
    sc = scenarios.load("incast-dcqcn", list(overrides))
    sim = Simulation(sc, trace="hop")
    switches = np.nonzero(sim.compiled.nodes["kind"] == SWITCH)[0]
    parts = []

    def keep(r):
        parts.append(r[np.isin(r["node"], switches) & np.isin(r["event"], [EV["enqueue"], EV["mark"]])])

    res = sim.run(trace_sink=keep)
    tr = np.concatenate(parts)
    e = sc.ecn
    enq = tr[(tr["event"] == EV["enqueue"]) & (tr["kind"] == FK["roce"])]
    marks = tr[tr["event"] == EV["mark"]]
    assert len(marks) == res.summary["ecn_marked"] == int(res.queues["marks"].sum()) > 0
    before = enq["qbytes"] - enq["size"]
    marked = np.isin(enq["pkt"], marks["pkt"])
    assert np.array_equal(np.sort(marks["qbytes"]), np.sort(before[marked]))
    assert not np.any(marked & (before <= e.kmin_bytes))
    assert np.all(marked[before >= e.kmax_bytes])
    band = (before > e.kmin_bytes) & (before < e.kmax_bytes)
    p = e.pmax * (before[band] - e.kmin_bytes) / (e.kmax_bytes - e.kmin_bytes)
    assert band.sum() > 100
    z = (marked[band].sum() - p.sum()) / np.sqrt((p * (1 - p)).sum())
    assert abs(z) < 4, f"{marked[band].sum()} marks in the band, {p.sum():.1f} expected"
    # what a receiver sees as CE is what the switch marked
    ce = tr[(tr["event"] == EV["enqueue"]) & (tr["ecn"] == CE)]
    assert set(ce["pkt"].tolist()) <= set(marks["pkt"].tolist())
