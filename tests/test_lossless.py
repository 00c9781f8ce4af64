"""Lossless at any scale: what PFC guarantees, checked over many fabrics (issue 9).

The invariant, for random star, leaf-spine and fat-tree fabrics, incast degrees 2-2000,
sizes, buffers, static and dynamic thresholds, pause times, cut-through, ECN/DCQCN on or
off, all with the default RoCE timers: either validation refuses the scenario with a
message that names the field, or the run ends with

- every flow complete and every byte delivered, nothing in flight;
- zero drops in the lossless class (no headroom violation, no buffer drop);
- zero retransmission timeouts and retransmissions (nothing was lost);
- no deadlock (the routing is acyclic);
- every switch's buffer pools and every priority group back at zero, every pause lifted
  (the last PFC frame of each group is an XON);
- with dynamic XOFF, enough shared pool and no DCQCN, the last completion within a few
  percent of the time the bottleneck link needs for all the frames at line rate.

Also: the validator's refusals (unreachable XON, a buffer that cannot hold the headroom,
per tier), the explicit opt-in to a smaller headroom pool (warned, counted as headroom
violations), and deadlock detection that reports a cycle and never an idle or slow fabric.
The timing helpers are the wire model of tests/conftest.py, not ethlink.sim.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import ethlink
from ethlink import scenarios
from ethlink.scenario import ScenarioError
from ethlink.sim import Simulation
from ethlink.topology import SWITCH

from conftest import ser

KiB, MiB = 1024, 1024**2
LOSSLESS = 3
ROCE_BASE, RETH = 66, 16            # RoCEv2 frame bytes beyond the payload (IBA A17), WRITE_FIRST's RETH
FIELD = re.compile(r"^[a-z_]+(\.[a-z_0-9]+)*(\[\d+\])?(\.[a-z_]+)*: ")


def write_frames(size: int, mtu: int) -> np.ndarray:
    """Frame bytes of one RoCE WRITE of `size` bytes: full MTU frames and a last one,
    RETH on the first, payload padded to 4 B."""
    n, last = divmod(size, mtu)
    payload = np.array([mtu] * n + ([last] if last else []), dtype=np.int64)
    frames = ROCE_BASE + payload + ((4 - payload % 4) % 4)
    frames[0] += RETH
    return np.maximum(frames, 64)


def incast(topology: dict, senders: int, size: int, *, buffer: int, xoff, alpha: float, quanta: int,
           cut_through: bool, ecn: bool, dcqcn: bool, response: str = "0ns", lossy: int = 0) -> dict:
    """`senders`:1 RoCE incast into h0 on the lossless priority; with `lossy` > 0, a raw
    permutation of that many bytes per host on priority 0 competes for the shared pool."""
    d = {
        "name": "lossless-prop",
        "topology": topology,
        "switch": {"buffer": buffer, "cut_through": cut_through},
        "pfc": {"priorities": [LOSSLESS], "xoff": xoff, "alpha": alpha, "quanta": quanta, "response": response},
        "workload": [{"kind": "incast", "receiver": "h0", "senders": senders, "size": size,
                      "prio": LOSSLESS, "transport": "roce"}],
    }
    if lossy:
        d["workload"].append({"kind": "permutation", "size": lossy, "prio": 0})
    if ecn:
        d["ecn"] = {"priorities": [LOSSLESS], "kmin": "40KiB", "kmax": "160KiB", "pmax": 0.2}
    if dcqcn:
        d["dcqcn"] = {"enabled": True}
    return d


def hosts_of(topology: dict) -> int:
    if topology["kind"] == "star":
        return topology["hosts"]
    if topology["kind"] == "leaf-spine":
        return topology["leaves"] * topology["hosts_per_leaf"]
    return topology["k"] ** 3 // 4


@st.composite
def fabrics(draw):
    kind = draw(st.sampled_from(["star", "leaf-spine", "fat-tree"]))
    rate = draw(st.sampled_from(["100G", "200G", "400G", "800G"]))
    delay = draw(st.sampled_from(["10ns", "100ns", "500ns", "2us"]))
    if kind == "star":
        t = {"kind": "star", "hosts": draw(st.integers(3, 2001))}
    elif kind == "leaf-spine":
        t = {"kind": "leaf-spine", "leaves": draw(st.integers(2, 8)), "hosts_per_leaf": draw(st.integers(2, 64)),
             "oversubscription": draw(st.sampled_from([1, 2, 4]))}
    else:
        t = {"kind": "fat-tree", "k": draw(st.sampled_from([4, 6]))}
    t.update(rate=rate, delay=delay)
    return t


@st.composite
def cases(draw):
    topology = draw(fabrics())
    senders = draw(st.integers(2, min(2000, hosts_of(topology) - 1)))
    budget = 16 * MiB // senders                         # bounded run time whatever the degree
    size = draw(st.integers(64, max(64, min(2 * MiB, budget))))
    ecn = draw(st.booleans())
    return topology, senders, size, dict(
        buffer=draw(st.sampled_from([2 * MiB, 8 * MiB, 32 * MiB, 128 * MiB])),
        xoff=draw(st.one_of(st.just("dynamic"), st.integers(9 * KiB, 2 * MiB), st.integers(4 * KiB, 9 * KiB))),
        alpha=draw(st.sampled_from([1 / 64, 1 / 8, 1.0, 4.0])),
        quanta=draw(st.sampled_from([0xFFFF, 0x400, 0x40])),
        cut_through=draw(st.booleans()),
        response=draw(st.sampled_from(["0ns", "50ns", "1us", "100us"])),
        lossy=draw(st.sampled_from([0, 0, 64 * KiB, MiB])),
        ecn=ecn, dcqcn=ecn and draw(st.booleans()))


def check_lossless(data: dict, senders: int, size: int) -> None:
    try:
        sc = ethlink.Scenario.from_dict(data)
        sim = Simulation(sc)
    except ScenarioError as exc:
        assert FIELD.match(str(exc)), f"error does not start with the field it is about: {exc}"
        return
    res = sim.run()
    s = res.summary
    why = f"{data['topology']} {senders}x{size} B: {s['drops']} {s['stop']}"
    assert s["stop"] == "empty", why
    fl = res.flows
    lossless = fl["prio"] == LOSSLESS
    assert s["packets_in_flight"] == 0
    if s["warnings"]:                   # an explicit opt-in (a pause time too short to refresh)
        assert data["pfc"]["quanta"] < 134 and s["warnings"][0].startswith("pfc.quanta")
        assert s["lossless_drops"] == s["headroom_violations"] == s["drops"].get("headroom", 0)
        # The class is lossy then, and go-back-N over a fabric that keeps dropping may
        # run out of roce.retry_limit: a QP that gave up is counted and said, with the
        # lossless drops as the cause, never silent.
        done = fl["finish_ps"][lossless] >= 0
        assert np.all(fl["delivered"][lossless][done] == size), why
        if not done.all():
            assert s["qp_errors"] > 0 and s["lossless_drops"] > 0, why
            assert any("qp_errors" in w and "lossless_drops" in w for w in s["warnings"][1:]), s["warnings"]
        return
    assert np.all(fl["finish_ps"][lossless] >= 0) and np.all(fl["delivered"][lossless] == size), why
    assert s["lossless_drops"] == 0 and s["headroom_violations"] == 0, why
    if len(data["workload"]) == 1:
        assert s["packets_dropped"] == 0 and s["drops"] == {}, why
    assert set(s["drops"]) <= {"buffer_full", "queue_limit"}, why
    assert s["timeouts"] == 0 and s["retransmitted_packets"] == 0, why
    assert not s["deadlock_detected"] and s["deadlock_cycle"] == []
    nodes, q = res.nodes, res.queues
    sw = nodes["kind"] == SWITCH
    for col in ("buffer_used", "shared_used", "hdrm_used"):
        assert np.all(nodes[col][sw] == 0), f"{col} left at {nodes[col][sw].max()}"
    assert np.all(q["ing_bytes"] == 0) and np.all(q["hdrm_bytes"] == 0)
    assert not np.any(q["pause_sent"]), "a pause left in force after the fabric drained"
    assert np.all(nodes["hdrm_hwm"][sw] <= nodes["hdrm_pool"][sw])
    # Performance: the bottleneck (h0's link) carries every data frame once.
    rate = int(sim.compiled.ports["rate_bps"][0])
    line = senders * int(ser(write_frames(size, sc.host.mtu) + 20, rate).sum())
    last = int(fl["finish_ps"][lossless].max() - fl["start_ps"].min())
    assert last >= line, "faster than the bottleneck's line rate"
    shared = nodes["shared_bytes"][sw].min()
    if data["pfc"]["xoff"] == "dynamic" and data["pfc"]["alpha"] >= 1 / 8 and shared >= 8 * MiB \
            and "dcqcn" not in data and data["pfc"]["quanta"] == 0xFFFF and len(data["workload"]) == 1:
        assert last <= 1.03 * line + 20_000_000, f"{last / line:.3f} x the line-rate time ({why})"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example(({"kind": "star", "hosts": 2001, "rate": "400G", "delay": "100ns"}, 2000, 4096,
          dict(buffer=128 * MiB, xoff="dynamic", alpha=1 / 8, quanta=0xFFFF, cut_through=False, ecn=False,
               dcqcn=False)))
@example(({"kind": "star", "hosts": 65, "rate": "400G", "delay": "100ns"}, 64, 64 * KiB,
          dict(buffer=2 * MiB + 512 * KiB, xoff=16 * KiB, alpha=1 / 8, quanta=0xFFFF, cut_through=False,
               ecn=False, dcqcn=False)))
@example(({"kind": "fat-tree", "k": 4, "rate": "100G", "delay": "10ns"}, 11, 742817,
          dict(buffer=2 * MiB, xoff=9 * KiB, alpha=1 / 64, quanta=0x40, cut_through=False, response="50ns",
               lossy=0, ecn=False, dcqcn=False)))        # a QP gives up (found by hypothesis, session 6)
def test_lossless_incast_invariants(case):
    topology, senders, size, kw = case
    check_lossless(incast(topology, senders, size, **kw), senders, size)


# ---------------------------------------------------------------------------------------
# The validator

def test_static_xoff_at_or_below_xon_offset_is_refused_naming_both_fields():
    # default: two of the largest frames: a RoCE WRITE ONLY with RETH and ImmDt at MTU 4096
    frame = 4096 + 66 + 16 + 4
    with pytest.raises(ScenarioError, match=rf"^pfc\.xoff: 4096 B is not above pfc\.xon_offset \({2 * frame} B"):
        scenarios.load("incast-pfc", ["pfc.xoff=4096"])
    with pytest.raises(ScenarioError, match=rf"pfc\.xon_offset \({2 * (frame + 84)} B"):
        scenarios.load("incast-pfc", ["pfc.xoff=8400", "hpcc.enabled=true"])    # HPCC's INT adds up to 84 B
    with pytest.raises(ScenarioError, match=r"pfc\.xon_offset \(20000 B\)"):
        scenarios.load("incast-pfc", ["pfc.xoff=20000", "pfc.xon_offset=20000"])
    sc = scenarios.load("incast-pfc", ["pfc.xoff=20001", "pfc.xon_offset=20000"])
    assert sc.pfc.xoff_bytes == 20001


def test_buffer_that_cannot_hold_the_headroom_is_refused_with_the_size_needed():
    """65 ports at 400G with 100 ns cables: about 37 KB of headroom each. The message gives
    the size needed, which then runs with zero loss."""
    with pytest.raises(ScenarioError) as err:
        Simulation(scenarios.load("incast-pfc", ['switch.buffer="2MiB"']))
    msg = str(err.value)
    assert msg.startswith("switch.buffer: ") and "65 ports x 1 lossless priority" in msg
    need = int(re.search(r"Use switch\.buffer >= [\d.]+ \w+ \(([\d,]+) B\)", msg).group(1).replace(",", ""))
    res = Simulation(scenarios.load("incast-pfc", [f"switch.buffer={need}"])).run()
    assert res.summary["flows_completed"] == 64 and res.summary["lossless_drops"] == 0
    with pytest.raises(ScenarioError, match=r"^switch\.buffer: "):
        Simulation(scenarios.load("incast-pfc", [f"switch.buffer={need - 1}"]))


def test_headroom_of_a_long_response_time_does_not_overflow():
    """100 us of response at 400G is 5 MB per port (ps x rate overflows int64: it once
    gave 426 KB and a run that dropped lossless frames): 65 ports need 325 MB."""
    with pytest.raises(ScenarioError, match=r"^switch\.buffer: .* x about 4\.\d+ MiB .* = 31\d\.\d+ MiB"):
        Simulation(scenarios.load("incast-pfc", ['pfc.response="100us"']))


def test_tier_buffer_names_the_tier():
    data = incast({"kind": "leaf-spine", "leaves": 2, "hosts_per_leaf": 32}, 8, 64 * KiB, buffer=32 * MiB,
                  xoff="dynamic", alpha=1 / 8, quanta=0xFFFF, cut_through=False, ecn=False, dcqcn=False)
    data["switch"]["tiers"] = {"spine": {"buffer": "64KiB"}}
    with pytest.raises(ScenarioError, match=r"^switch\.tiers\.spine\.buffer: .* cannot hold the PFC headroom"):
        Simulation(ethlink.Scenario.from_dict(data))


def test_smaller_headroom_pool_is_an_opt_in_warned_and_counted():
    """A shared headroom pool far below what 64 ports need: the run goes ahead with a
    warning; every lossless frame it loses is a headroom violation."""
    sc = scenarios.load("incast-pfc", ['pfc.headroom_pool="64KiB"', 'pfc.xoff="64KiB"', 'workload.0.size="256KiB"'])
    sim = Simulation(sc)
    s = sim.run().summary
    assert len(s["warnings"]) == 1 and s["warnings"][0].startswith("pfc.headroom_pool")
    assert s["headroom_violations"] > 0
    assert s["drops"] == {"headroom": s["headroom_violations"]}
    assert s["lossless_drops"] == s["headroom_violations"]
    assert max(s["headroom_hwm_bytes"].values()) <= 64 * KiB


def test_headroom_below_the_computed_need_warns():
    sc = scenarios.load("incast-pfc", ['pfc.headroom="1KiB"', 'pfc.xoff="64KiB"', "workload.0.senders=8",
                                       'workload.0.size="256KiB"'])
    s = Simulation(sc).run().summary
    assert any(w.startswith("pfc.headroom 1.00 KiB") for w in s["warnings"])
    assert s["headroom_violations"] == s["drops"]["headroom"] > 0


# ---------------------------------------------------------------------------------------
# Deadlock means a cycle

def test_deadlock_reports_the_ring_cycle():
    """deadlock-pfc: every ring switch's port to the next switch clockwise, priority 3,
    each waiting for the next."""
    sc = scenarios.load("deadlock-pfc")
    sim = Simulation(sc)
    s = sim.run().summary
    assert s["stop"] == "deadlock"
    cyc = s["deadlock_cycle"]
    assert len(cyc) == sc.topology.switches
    assert {c["prio"] for c in cyc} == {3}
    for a, b in zip(cyc, cyc[1:] + cyc[:1]):
        assert a["peer"] == b["node"], f"{a} does not wait for {b}"
    assert len({c["node"] for c in cyc}) == sc.topology.switches


def test_a_slow_fabric_is_not_a_deadlock():
    """1 bit/s links: nothing finishes for ages, but nothing waits in a cycle."""
    sc = scenarios.load("incast-pfc", ["topology.rate=1", "workload.0.senders=4"])
    s = Simulation(sc).run(until=5 * 10**12).summary
    assert s["stop"] == "until" and not s["deadlock_detected"] and s["deadlock_cycle"] == []


def test_paused_incast_for_many_check_periods_is_not_a_deadlock():
    """A 64:1 incast with a deadlock check every 20 us: senders stay paused for many
    periods, yet nothing waits in a cycle and every flow completes."""
    s = Simulation(scenarios.load("incast-pfc", ['pfc.deadlock_check="20us"'])).run().summary
    assert s["stop"] == "empty" and s["flows_completed"] == 64 and not s["deadlock_detected"]


# ---------------------------------------------------------------------------------------
# Scale, with every setting at its default

def big_incast(senders: int) -> dict:
    """`senders`:1 RoCEv2 incast of 256 KiB WRITEs at 400G, PFC on priority 3, on a
    leaf-spine of 64 hosts per leaf; every other setting (buffer, thresholds, headroom,
    RoCE timers) at its default."""
    leaves = -(-(senders + 1) // 64)
    return {"name": f"incast-{senders}", "topology": {"kind": "leaf-spine", "leaves": leaves, "hosts_per_leaf": 64},
            "pfc": {"priorities": [LOSSLESS]},
            "workload": [{"kind": "incast", "receiver": "h0", "senders": senders, "size": "256KiB",
                          "prio": LOSSLESS, "transport": "roce"}]}


def check_big(senders: int) -> None:
    res = Simulation(ethlink.Scenario.from_dict(big_incast(senders))).run()
    s = res.summary
    assert s["flows_completed"] == senders and s["lossless_drops"] == 0 and s["packets_dropped"] == 0
    assert s["timeouts"] == 0 and s["retransmitted_packets"] == 0 and not s["deadlock_detected"]
    line = senders * int(ser(write_frames(256 * KiB, 4096) + 20, 400 * 10**9).sum())
    last = int(res.flows["finish_ps"].max())
    assert line <= last <= 1.01 * line + 10_000_000, f"{last / line:.4f} x the line-rate time"


def test_1000_to_1_incast_defaults_lossless_at_line_rate():
    check_big(1000)


def test_10000_to_1_incast_defaults_lossless_at_line_rate():
    """10,048 hosts on 157 leaves and 64 spines, 2.5 GiB into one port: about 5 s and
    300 MB here."""
    check_big(10000)


# ---------------------------------------------------------------------------------------
# RoCE timers of real NICs

@pytest.mark.parametrize("exponent, ps", [(0, 0), (1, 8_192_000), (14, 67_108_864_000), (20, 4_294_967_296_000),
                                          (31, 4_096_000 << 31)])
def test_iba_local_ack_timeout_is_4_096_us_times_two_to_the_exponent(exponent, ps):
    from ethlink.scenario import iba_timeout_ps, rto_initial_ps
    assert iba_timeout_ps(exponent) == ps
    sc = scenarios.load("incast-pfc", [f"roce.timeout={exponent}"])
    assert rto_initial_ps(sc.roce) == ps
    assert int(Simulation(sc).compiled.qps["rto_ps"][0]) == ps


def test_timeout_and_rto_are_exclusive_and_bounded():
    with pytest.raises(ScenarioError, match=r"^roce\.rto: give the retransmission timeout either as roce\.timeout"):
        scenarios.load("incast-pfc", ["roce.timeout=14", 'roce.rto="1ms"'])
    with pytest.raises(ScenarioError, match=r"^roce\.timeout: must be in 0\.\.31, got 32"):
        scenarios.load("incast-pfc", ["roce.timeout=32"])
    with pytest.raises(ScenarioError, match=r"^roce\.rto_max .* must be >= the initial timeout \(roce\.timeout 20"):
        scenarios.load("incast-pfc", ['roce.rto_max="1s"'])


def test_a_short_timer_in_a_lossless_incast_retransmits_spuriously_and_warns():
    """A 32:1 PFC incast holds frames in the switch for tens of microseconds: a 20 us timer
    fires with nothing lost and the copies it sends arrive as duplicates; the default IBA
    timer never fires."""
    short = Simulation(scenarios.load("incast-pfc", ["workload.0.senders=32", 'roce.rto="20us"'])).run().summary
    assert short["packets_dropped"] == 0 and short["timeouts"] > 0
    assert 0 < short["spurious_retransmissions"] <= short["retransmitted_packets"]
    assert any(w.startswith(f"{short['timeouts']} RoCE retransmission timeouts without a single drop")
               for w in short["warnings"])
    default = Simulation(scenarios.load("incast-pfc", ["workload.0.senders=32"])).run().summary
    assert default["timeouts"] == default["retransmitted_packets"] == default["spurious_retransmissions"] == 0
    assert default["warnings"] == [] and default["flows_completed"] == 32


def test_timeout_zero_never_fires():
    """A lossy incast with the timer off: tail losses are never repaired by a timeout."""
    s = Simulation(scenarios.load("incast-pfc", ["pfc.enabled=false", "roce.timeout=0"]))
    res = s.run(until=20 * 10**9).summary
    assert res["timeouts"] == 0 and res["packets_dropped"] > 0
