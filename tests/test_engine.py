"""The packet engine against hand arithmetic: exact picosecond arrival over one and several
hops (store-and-forward, cut-through and its fallback), conservation and buffer arithmetic
of an incast, ECMP spreading, determinism, schedulers and same-time tie order.

Every expected time below is worked out from the wire model in csrc/engine.pyx's header
(see conftest.py), never copied from a run and never taken from ethlink.sim's ideal-FCT
function (which is itself checked against these numbers at the end of each timing test).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ethlink import _engine, scenarios
from ethlink.scenario import Scenario
from ethlink.sim import Simulation

from conftest import (CT_HEADER, G, NS, PREAMBLE, WIRE_EXTRA, chi2_sf_even, frame, port_index,
                      ser, simulate, tier_ports)

# The parameters every timing test spells out (so the arithmetic is readable).
RATE = 400 * G
D_HOST = 100 * NS          # host-link propagation
D_FAB = 500 * NS           # switch-switch propagation
L_SW = 300 * NS            # switch pipeline latency, added on receive
L_HOST = 200 * NS          # NIC receive latency, added on receive


def star(hosts=2, **switch):
    return {"topology": {"kind": "star", "hosts": hosts, "rate": RATE, "delay": D_HOST},
            "switch": {"latency": L_SW, **switch}, "host": {"latency": L_HOST}}


def leafspine(uplink=RATE, **switch):
    return {"topology": {"kind": "leaf-spine", "leaves": 2, "hosts_per_leaf": 2, "spines": 2,
                         "rate": RATE, "uplink_rate": uplink, "delay": D_HOST,
                         "fabric_delay": D_FAB},
            "switch": {"latency": L_SW, **switch}, "host": {"latency": L_HOST}}


def one_flow(data, src, dst, size, mtu=None):
    data = dict(data, flow=[{"src": src, "dst": dst, "size": size}])
    if mtu:
        data["host"] = dict(data["host"], mtu=mtu)
    return data


def finish_of(data, flow=0):
    sim, res = simulate(data)
    assert res.summary["flows_completed"] == res.summary["flows_total"]
    return sim, res, int(res.flows["finish_ps"][flow])


# ---------------------------------------------------------------------------------------
# 1. Exact arrival times.

def test_one_frame_one_switch_exact():
    """100 B payload -> 122 B frame. Each link: ser(8 + 122 B) at 400G = 130*8/400 ns =
    2.6 ns, then 100 ns of fibre; the switch adds 300 ns, the NIC 200 ns."""
    _, res, t = finish_of(one_flow(star(), "h0", "h1", 100))
    assert ser(130, RATE) == 2600
    expected = (2600 + 100_000) + 300_000 + (2600 + 100_000) + 200_000
    assert t == expected == 705_200
    assert res.flows["first_tx_ps"][0] == 0
    assert res.flows_table()["fct_ps"][0].as_py() == expected
    assert res.ideal_fct_ps[0] == expected          # the ideal model agrees with the engine
    assert res.flows_table()["slowdown"][0].as_py() == 1.0


def test_minimum_frame_and_exact_ceiling():
    """A 1 B payload is padded to a 64 B frame (ser(72 B)). At 7 Gb/s 72 B take
    576e12/7e9 = 82285.71.. ps, rounded up per frame to 82286 -- per hop, not from a
    rounded ps-per-byte."""
    data = one_flow(star(), "h0", "h1", 1)
    data["topology"]["rate"] = 7 * G
    _, _, t = finish_of(data)
    assert frame(1) == 64
    assert ser(72, 7 * G) == 82286
    assert t == 2 * (82286 + D_HOST) + L_SW + L_HOST


def test_store_and_forward_leaf_spine_exact():
    """h0 -> leaf0 -> spine -> leaf1 -> h2: four links of ser(8 + 1022 B) = 20.6 ns, two
    host links of 100 ns and two fabric links of 500 ns, three switches and the NIC."""
    _, res, t = finish_of(one_flow(leafspine(), "h0", "h2", 1000))
    assert ser(1030, RATE) == 20_600
    assert t == 4 * 20_600 + 2 * D_HOST + 2 * D_FAB + 3 * L_SW + L_HOST
    assert res.summary["packet_hops"] == 4
    assert res.ideal_fct_ps[0] == t


def test_store_and_forward_fat_tree_cross_pod_exact():
    """k=4 fat-tree, h0 (pod 0) -> h15 (pod 3): host-edge-agg-core-agg-edge-host, six
    links (two host links, four fabric links) and five switches."""
    data = {"topology": {"kind": "fat-tree", "k": 4, "rate": RATE, "delay": D_HOST,
                         "fabric_delay": D_FAB},
            "switch": {"latency": L_SW}, "host": {"latency": L_HOST},
            "flow": [{"src": "h0", "dst": "h15", "size": 1000}]}
    _, res, t = finish_of(data)
    assert t == 6 * 20_600 + 2 * D_HOST + 4 * D_FAB + 5 * L_SW + L_HOST
    assert res.summary["packet_hops"] == 6
    assert res.ideal_fct_ps[0] == t


@pytest.mark.parametrize("topo", ["star", "leafspine"])
def test_multi_frame_pipelining_exact(topo):
    """10 full frames of 1000 B payload (1022 B frames) leave the NIC back to back, one
    every ser(1022 + 20 B) = 20.84 ns; every hop has the same rate, so each switch forwards
    frame i as soon as it is in, and the last frame arrives 9 x 20.84 ns after a lone one."""
    data = star() if topo == "star" else leafspine()
    dst = "h1" if topo == "star" else "h2"
    _, res, t = finish_of(one_flow(data, "h0", dst, 10 * 1000, mtu=1000))
    w = ser(1022 + WIRE_EXTRA, RATE)
    assert w == 20_840
    if topo == "star":
        one = 2 * (20_600 + D_HOST) + L_SW + L_HOST
    else:
        one = 4 * 20_600 + 2 * D_HOST + 2 * D_FAB + 3 * L_SW + L_HOST
    assert t == 9 * w + one
    assert res.flows["packets"][0] == 10
    assert res.ideal_fct_ps[0] == t


@pytest.mark.parametrize("uplink_gbps", [100, 800])
def test_store_and_forward_rate_change_exact(uplink_gbps):
    """10 frames h0 -> h2 over uplinks of another rate, store-and-forward.

    100G uplinks: frames reach leaf0 every W = 20.84 ns but leave it every
    W_up = ser(1042 B, 100G) = 83.36 ns, so the last one leaves leaf0 9 W_up after the
    first; the spine and leaf1 then see frames W_up apart and never queue.
    800G uplinks: nothing queues anywhere; frames stay W apart end to end."""
    up = uplink_gbps * G
    _, res, t = finish_of(one_flow(leafspine(uplink=up), "h0", "h2", 10 * 1000, mtu=1000))
    host_hop = ser(1030, RATE) + D_HOST
    up_hop = ser(1030, up) + D_FAB
    lone = host_hop + L_SW + 2 * (up_hop + L_SW) + host_hop + L_HOST
    spacing = max(ser(1042, up), 20_840)
    if uplink_gbps == 100:
        assert (ser(1042, up), ser(1030, up)) == (83_360, 82_400)
    assert t == 9 * spacing + lone
    assert res.ideal_fct_ps[0] == t


def test_short_last_frame_waits_behind_previous():
    """10 full frames then a 100 B one (122 B frame). The NIC sends it at 10 W; the switch
    has it at 10 W + ser(130 B) + d + L, but its port is still busy with frame 9 until
    10 W + ser(1030 B) + d + L: the short frame starts then."""
    _, res, t = finish_of(one_flow(star(), "h0", "h1", 10 * 1000 + 100, mtu=1000))
    w = 20_840
    switch_start = 10 * w + 20_600 + D_HOST + L_SW
    assert t == switch_start + ser(130, RATE) + D_HOST + L_HOST
    assert res.ideal_fct_ps[0] == t


def test_cut_through_star_exact():
    """A cut-through switch forwards after the preamble and the first 64 B: ser(72 B) =
    1.44 ns instead of the whole frame. The NIC is store-and-forward."""
    data = one_flow(star(cut_through=True), "h0", "h1", 10 * 1000, mtu=1000)
    _, res, t = finish_of(data)
    assert ser(PREAMBLE + CT_HEADER, RATE) == 1440
    assert t == 9 * 20_840 + (1440 + D_HOST) + L_SW + (20_600 + D_HOST) + L_HOST
    assert res.ideal_fct_ps[0] == t


@pytest.mark.parametrize("uplink_gbps", [400, 800, 200])
def test_cut_through_leaf_spine_and_fallback(uplink_gbps):
    """Cut-through everywhere except where the egress is faster than the ingress: there
    the switch waits for the last bit (store-and-forward) so the egress cannot underrun.

    400G uplinks: all three switches cut through (1.44 ns each at 400G).
    800G uplinks: leaf0 (400G in, 800G out) falls back and waits for ser(1030 B, 400G);
                  spine and leaf1 (800G in, 800G/400G out) cut through at 0.72 ns.
    200G uplinks: leaf0 and the spine cut through (1.44 ns, 2.88 ns); leaf1 (200G in, 400G
                  out) falls back and waits for ser(1030 B, 200G) = 41.2 ns.
    """
    up = uplink_gbps * G
    sim, res, t = finish_of(one_flow(leafspine(uplink=up, cut_through=True), "h0", "h2", 1000))
    host_ser = ser(1030, RATE)                       # 20.6 ns, the last hop to the NIC
    fixed = 2 * D_HOST + 2 * D_FAB + 3 * L_SW + L_HOST
    if uplink_gbps == 400:
        expected = 3 * ser(72, RATE) + host_ser + fixed
    elif uplink_gbps == 800:
        assert ser(72, up) == 720
        expected = host_ser + 2 * 720 + host_ser + fixed
    else:
        assert (ser(72, RATE), ser(72, up), ser(1030, up)) == (1440, 2880, 41_200)
        expected = 1440 + 2880 + 41_200 + host_ser + fixed
    assert t == expected
    assert res.ideal_fct_ps[0] == t


def test_flows_of_different_lengths_to_the_last_host():
    """h2 -> h3 (same leaf, 2 links) and h0 -> h3 (4 links); h3 is the fabric's last node.
    Both arrive at their hand-computed times, and the ideal of each lone flow is exact."""
    data = leafspine()
    data["flow"] = [{"src": "h2", "dst": "h3", "size": 1000},
                    {"src": "h0", "dst": "h3", "size": 1000}]
    _, res = simulate(data)
    short = 2 * (20_600 + D_HOST) + L_SW + L_HOST
    long_ = 4 * 20_600 + 2 * D_HOST + 2 * D_FAB + 3 * L_SW + L_HOST
    assert res.flows["finish_ps"].tolist() == [short, long_]
    assert res.ideal_fct_ps.tolist() == [short, long_]


@pytest.mark.parametrize("cut_through", [False, True])
def test_every_frame_sent_is_received_once(cut_through):
    """Per link, frames transmitted at one end equal frames received at the other (nothing
    in flight at the end), also when a cut-through switch falls back to store-and-forward."""
    data = one_flow(leafspine(uplink=800 * G, cut_through=cut_through), "h0", "h2", 5000, mtu=1000)
    _, res = simulate(data)
    ports = res.ports
    assert res.summary["packets_in_flight"] == 0
    assert np.array_equal(ports["tx_frames"], ports["rx_frames"][ports["peer"]])
    assert np.array_equal(ports["tx_bytes"], ports["rx_bytes"][ports["peer"]])


def test_busy_time_is_frames_plus_preamble_and_gap():
    _, res = simulate(one_flow(star(), "h0", "h1", 10 * 1000, mtu=1000))
    busy = res.ports["busy_ps"][res.ports["tx_frames"] > 0]
    assert np.all(busy == 10 * ser(1022 + WIRE_EXTRA, RATE))
    assert np.all(res.ports["tx_bytes"][res.ports["tx_frames"] > 0] == 10 * 1022)


# ---------------------------------------------------------------------------------------
# 2. Conservation and buffer arithmetic of a raw N:1 incast.

N_SENDERS, M_FRAMES, MTU = 16, 64, 4096
F = MTU + 22                                     # 4118 B frames


def incast(**switch):
    data = star(hosts=N_SENDERS + 1, **switch)
    data["host"]["mtu"] = MTU
    data["workload"] = [{"kind": "incast", "receiver": "h0", "size": M_FRAMES * MTU}]
    return simulate(data)


def expected_delivered(q_frames: int) -> int:
    """Frames of a synchronous N:1 incast that get through one egress queue of q_frames.

    All N senders run at the receiver's line rate, so N frames arrive at the switch in
    each of M slots one wire time W apart, and the egress drains one per W. The first frame
    goes straight to the wire; the queue fills within a few slots ((N-1) per slot); from
    then on each slot admits exactly as many frames as the port drained. Counting admitted
    = drained during the slots + left in the queue after the last slot, with the port's
    TX_DONE and the next slot's arrivals at the same picosecond and the arrivals first (they
    were scheduled earlier: insertion order), the queue holds q - 1 after the last drain:
    delivered = M + q - 1.
    """
    assert (N_SENDERS - 1) * (M_FRAMES - 1) > q_frames     # the queue does fill
    return M_FRAMES + q_frames - 1


def check_conservation(s):
    total = N_SENDERS * M_FRAMES
    assert s["bytes_sent"] == N_SENDERS * M_FRAMES * MTU
    assert s["bytes_delivered"] + s["bytes_dropped"] == s["bytes_sent"]
    assert s["packets_sent"] == total
    assert s["packets_delivered"] + s["packets_dropped"] == total
    assert s["packets_in_flight"] == 0
    assert sum(s["drops"].values()) == s["packets_dropped"]
    assert s["bytes_dropped"] == s["packets_dropped"] * MTU      # all frames are full


@pytest.mark.parametrize("q_frames,extra", [(20, 0), (100, 1000), (300, F - 1)])
def test_incast_static_threshold_drops_match_buffer_arithmetic(q_frames, extra):
    limit = q_frames * F + extra                  # extra < F: no room for one more frame
    _, res = incast(threshold="static", queue_limit=limit)
    s = res.summary
    check_conservation(s)
    want = expected_delivered(q_frames)
    assert abs(s["packets_delivered"] - want) <= N_SENDERS      # the brief's tolerance
    assert s["packets_delivered"] == want                       # and the exact count
    assert s["drops"] == {"queue_limit": N_SENDERS * M_FRAMES - want}
    # the receiver's queue peaked at exactly q_frames frames
    sw_to_h0 = res.ports["tx_frames"].argmax()
    assert res.queues["hwm"][sw_to_h0 * 8] == q_frames * F


def test_incast_lower_queue_limit_drops_more_by_the_difference():
    drops = {}
    for q in (40, 160):
        _, res = incast(threshold="static", queue_limit=q * F)
        check_conservation(res.summary)
        drops[q] = res.summary["packets_dropped"]
    assert drops[40] - drops[160] == 160 - 40


@pytest.mark.parametrize("alpha", [1.0, 0.25, 3.0])
def test_incast_dynamic_threshold_drops_match_buffer_arithmetic(alpha):
    """Dynamic threshold: a frame is admitted while q + F <= alpha x (B - used); with one
    queue in use, used = q, so the queue takes n + 1 frames where
    n = floor((alpha B - F) / ((1 + alpha) F))."""
    buf = 4 * 2**20
    _, res = incast(threshold="dynamic", alpha=alpha, buffer=buf)
    s = res.summary
    check_conservation(s)
    q = int((alpha * buf - F) // ((1 + alpha) * F)) + 1
    assert s["packets_delivered"] == expected_delivered(q)
    assert set(s["drops"]) == {"queue_limit"}
    assert s["buffer_hwm_bytes"]["sw0"] == q * F


def test_incast_shared_buffer_full_reason():
    """queue_limit == buffer: the shared buffer check comes first, reason buffer_full."""
    buf = 200 * F
    _, res = incast(threshold="static", buffer=buf, queue_limit=buf)
    s = res.summary
    check_conservation(s)
    assert s["packets_delivered"] == expected_delivered(200)
    assert set(s["drops"]) == {"buffer_full"}


def test_builtin_incast_conserves():
    """The shipped 64:1 incast, scaled to 64 KiB per sender."""
    sc = scenarios.load("incast-raw", ["workload.0.size=64KiB"])
    res = Simulation(sc).run()
    s = res.summary
    assert s["bytes_sent"] == 64 * 64 * 1024
    assert s["bytes_delivered"] + s["bytes_dropped"] == s["bytes_sent"]
    assert s["packets_delivered"] + s["packets_dropped"] == s["packets_sent"] == 64 * 16
    assert s["packets_in_flight"] == 0


# ---------------------------------------------------------------------------------------
# 3. ECMP.

def leafspine_big(ecmp, workload, size, leaves=8, hpl=16, spines=8, seed=1):
    return {"seed": seed,
            "topology": {"kind": "leaf-spine", "leaves": leaves, "hosts_per_leaf": hpl,
                         "spines": spines},
            "switch": {"ecmp": ecmp},
            "workload": [{"kind": workload, "size": size}]}


def per_leaf_uplink_counts(sim, res, what="tx_frames"):
    """{leaf name: counts on its uplinks, in spine order}."""
    pt, names = sim.compiled.port_table, sim.compiled.fabric.names
    out = {}
    for p in tier_ports(sim, "leaf", "spine"):
        out.setdefault(names[pt.node[p]], []).append(int(res.ports[what][p]))
    return {k: np.asarray(v) for k, v in out.items()}


def chi2_uniform(groups):
    """Pearson chi-square of each group against a uniform split, summed; df = sum(k - 1)."""
    stat, df = 0.0, 0
    for c in groups.values():
        e = c.sum() / len(c)
        stat += float(((c - e) ** 2 / e).sum())
        df += len(c) - 1
    return stat, df


def cross_leaf_alltoall(leaves, hpl, spines, size):
    """Every ordered pair of hosts on different leaves, as explicit flows."""
    h = np.arange(leaves * hpl)
    src, dst = np.meshgrid(h, h, indexing="ij")
    keep = (src // hpl) != (dst // hpl)
    flows = [{"src": int(a), "dst": int(b), "size": size} for a, b in zip(src[keep], dst[keep])]
    return {"topology": {"kind": "leaf-spine", "leaves": leaves, "hosts_per_leaf": hpl,
                         "spines": spines},
            "flow": flows}


def test_ecmp_flow_hash_spreads_flows_evenly():
    """All-to-all across leaves of one-frame flows on 8 leaves x 8 hosts, 8 spines: each
    leaf's 8 x 56 flows pick an uplink by a seeded hash, so the per-uplink flow counts are
    multinomial(448, 1/8): mean 56, sigma sqrt(448 * 1/8 * 7/8) = 7.0. Pearson's
    chi-square over the 8 leaves has 8 x 7 = 56 degrees of freedom."""
    sim, res = simulate(cross_leaf_alltoall(8, 8, 8, 1000))
    groups = per_leaf_uplink_counts(sim, res)
    assert len(groups) == 8
    n_leaf = 8 * (64 - 8)
    sigma = np.sqrt(n_leaf * (1 / 8) * (7 / 8))
    for c in groups.values():
        assert len(c) == 8 and c.sum() == n_leaf        # every flow used exactly one uplink
        assert np.all(np.abs(c - n_leaf / 8) < 5 * sigma), c
    stat, df = chi2_uniform(groups)
    assert df == 56
    assert chi2_sf_even(stat, df) > 1e-3, f"chi-square {stat:.1f} on {df} df"


def test_ecmp_flow_hash_alltoall_workload():
    """The same on the alltoall workload itself (128 hosts, 16 x 112 flows per leaf):
    multinomial(1792, 1/8) per leaf."""
    sim, res = simulate(leafspine_big("flow", "alltoall", 1000))
    groups = per_leaf_uplink_counts(sim, res)
    n_leaf = 16 * (128 - 16)
    sigma = np.sqrt(n_leaf * (1 / 8) * (7 / 8))
    for c in groups.values():
        assert c.sum() == n_leaf and np.all(np.abs(c - n_leaf / 8) < 5 * sigma), c
    stat, df = chi2_uniform(groups)
    assert chi2_sf_even(stat, df) > 1e-3, f"chi-square {stat:.1f} on {df} df"


def test_ecmp_spray_balances_bytes_on_every_uplink():
    """Per-packet spraying of a permutation (1 MiB = 256 frames per flow): every frame picks
    its uplink anew, so a leaf's uplinks carry multinomial shares of its frames; with
    per-flow hashing the same permutation is clumped 256 frames at a time."""
    f = 4096 + 22
    spray_sim, spray = simulate(leafspine_big("spray", "permutation", "1MiB", 4, 8, 4))
    flow_sim, flow = simulate(leafspine_big("flow", "permutation", "1MiB", 4, 8, 4))
    groups = per_leaf_uplink_counts(spray_sim, spray)
    bytes_ = per_leaf_uplink_counts(spray_sim, spray, "tx_bytes")
    for leaf, c in groups.items():
        assert np.array_equal(bytes_[leaf], c * f)
        n = c.sum()
        if n == 0:
            continue
        sigma = np.sqrt(n * (1 / 4) * (3 / 4))
        assert np.all(c > 0)
        assert np.all(np.abs(c - n / 4) < 5 * sigma), (leaf, c)
    stat, df = chi2_uniform({k: v for k, v in groups.items() if v.sum()})
    assert chi2_sf_even(stat, df) > 1e-3, f"spray chi-square {stat:.1f} on {df} df"
    fstat, fdf = chi2_uniform({k: v for k, v in per_leaf_uplink_counts(flow_sim, flow).items() if v.sum()})
    assert chi2_sf_even(fstat, fdf) < 1e-6, "per-flow hashing should clump frames"
    for s in (spray.summary, flow.summary):
        assert s["bytes_delivered"] + s["bytes_dropped"] == s["bytes_sent"] == 32 * 2**20


# ---------------------------------------------------------------------------------------
# 4. Determinism.

VOLATILE = ("wall_s", "events_per_s")


def small_permutation(seed):
    return scenarios.load("permutation-leafspine", [
        "topology.leaves=4", "topology.hosts_per_leaf=8", "workload.0.size=256KiB",
        "workload.0.seed=7", f"seed={seed}"])


def stable(summary):
    return {k: v for k, v in summary.items() if k not in VOLATILE}


def test_same_seed_same_everything():
    a = Simulation(small_permutation(1)).run()
    b = Simulation(small_permutation(1)).run()
    assert stable(a.summary) == stable(b.summary)
    assert a.summary["events"] == b.summary["events"] > 0
    assert np.array_equal(a.ports, b.ports)
    assert np.array_equal(a.flows, b.flows)
    assert np.array_equal(a.queues, b.queues)


def test_different_seed_changes_ecmp_only():
    a_sim = Simulation(small_permutation(1))
    b_sim = Simulation(small_permutation(2))
    a, b = a_sim.run(), b_sim.run()
    # same flows (the permutation has its own seed) ...
    assert np.array_equal(a.flows[["src", "dst", "size"]], b.flows[["src", "dst", "size"]])
    # ... on other paths
    up = tier_ports(a_sim, "leaf", "spine")
    assert not np.array_equal(a.ports["tx_bytes"][up], b.ports["tx_bytes"][up])
    assert a.summary["bytes_sent"] == b.summary["bytes_sent"]


def test_two_engines_side_by_side_and_resumed_run():
    """No module-level state: interleaving two engines, and stopping one half way and
    resuming it, gives the same result as one straight run."""
    sc = small_permutation(3)
    straight = Simulation(sc).run()
    a, b = Simulation(sc), Simulation(sc)
    half = straight.summary["sim_time_ps"] // 2
    first = a.run(until=half)
    assert first.stop == "until" and a.engine.now <= half
    b.run()
    resumed = a.run()
    assert resumed.stop == "empty"
    assert stable(resumed.summary) == stable(straight.summary)


@pytest.mark.parametrize("frac", [0.1, 0.5, 0.9])
def test_stopped_run_counts_packets_in_flight(frac):
    """Stopped at a horizon, every packet a source made is delivered, dropped or counted
    in flight (DESIGN: nothing is silently lost)."""
    sc = scenarios.load("incast-raw", ["workload.0.size=256KiB", "workload.0.senders=16"])
    end = Simulation(sc).run().summary["sim_time_ps"]
    res = Simulation(sc).run(until=int(end * frac))
    s = res.summary
    assert s["stop"] == "until" and s["sim_time_ps"] <= end * frac
    assert s["packets_in_flight"] > 0
    assert s["packets_delivered"] + s["packets_dropped"] + s["packets_in_flight"] == s["packets_sent"]
    assert s["bytes_delivered"] + s["bytes_dropped"] <= s["bytes_sent"]


# ---------------------------------------------------------------------------------------
# 6. Schedulers: strict priority and DWRR at a shared bottleneck.

M_PRIO = 60
W = ser(1022 + WIRE_EXTRA, RATE)                  # 20.84 ns per 1022 B frame
A0 = ser(1030, RATE) + D_HOST + L_SW               # first frame in at the switch
TAIL = ser(1030, RATE) + D_HOST + L_HOST           # from the switch's first bit to delivery


def two_senders(prios, scheduler="strict", weights=None, m=M_PRIO):
    data = star(hosts=3)
    data["host"]["mtu"] = 1000
    data["ports"] = {"scheduler": scheduler}
    if weights:
        data["ports"]["weights"] = weights
    data["flow"] = [{"src": "h1", "dst": "h0", "size": m * 1000, "prio": prios[0]},
                    {"src": "h2", "dst": "h0", "size": m * 1000, "prio": prios[1]}]
    return simulate(data)


@pytest.mark.parametrize("high_flow", [0, 1])
def test_strict_priority_high_finishes_at_ideal(high_flow):
    """Both senders at line rate into one 400G port. The egress is never idle from A0 on,
    so the last frame (2M frames in all) leaves at A0 + (2M-1) W. The high flow is served
    first whenever it has a frame; it waits at most for the one low frame already on the
    wire (no preemption): exactly that when the low flow's first frame arrived first,
    which by tie order is when the low flow has the lower index."""
    prios = [7, 0] if high_flow == 0 else [0, 7]
    _, res = two_senders(prios)
    fin = res.flows["finish_ps"]
    hi, lo = fin[high_flow], fin[1 - high_flow]
    ideal = A0 + (M_PRIO - 1) * W + TAIL
    assert hi == (ideal if high_flow == 0 else ideal + W)
    assert lo == A0 + (2 * M_PRIO - 1) * W + TAIL
    assert res.ideal_fct_ps[high_flow] == ideal


def test_dwrr_weights_3_to_1():
    """DWRR with weight 3 on priority 0 and 1 on priority 1 (strict would favour 1): while
    both are backlogged the egress serves 3 frames of priority 0 per frame of priority 1.
    The heavy flow's M frames are out when the egress has sent about 4M/3 frames; the
    light flow gets the rest of that time, and the port never idles, so the light flow
    ends at A0 + (2M-1) W exactly."""
    m = 540
    _, res = two_senders([1, 0], "dwrr", [3, 1, 1, 1, 1, 1, 1, 1], m=m)
    light, heavy = res.flows["finish_ps"]
    sent_by_heavy_finish = (heavy - TAIL - A0) // W + 1      # egress frames up to then
    light_frames = sent_by_heavy_finish - m
    ratio = m / light_frames
    assert 2.7 < ratio < 3.3, ratio
    assert abs(heavy - (A0 + (4 * m / 3 - 1) * W + TAIL)) < 0.1 * m * W
    assert light == A0 + (2 * m - 1) * W + TAIL
    # the same flows under strict priority: priority 1 wins outright
    _, strict = two_senders([1, 0], "strict", m=m)
    assert strict.flows["finish_ps"][0] < strict.flows["finish_ps"][1]


def test_dwrr_equal_weights_alternate():
    m = 300
    _, res = two_senders([1, 0], "dwrr", m=m)
    a, b = res.flows["finish_ps"]
    # equal shares: both finish in the last few quanta of the 2M frame slots
    end = A0 + (2 * m - 1) * W + TAIL
    assert max(a, b) == end
    assert end - min(a, b) <= 2 * (9216 // 1022 + 1) * W


# ---------------------------------------------------------------------------------------
# 7. Tie order: same-time events run in insertion order.

def test_same_time_flows_on_one_port_go_in_index_order():
    """Three one-frame flows from h1 start at the same picosecond: the NIC takes them in
    flow-index order (not destination order), back to back, one wire time apart."""
    data = star(hosts=4)
    data["flow"] = [{"src": "h1", "dst": d, "size": 1000} for d in ("h3", "h0", "h2")]
    _, res = simulate(data)
    w = ser(1022 + WIRE_EXTRA, RATE)
    assert res.flows["first_tx_ps"].tolist() == [0, w, 2 * w]


def test_same_time_arrivals_at_a_switch_run_in_insertion_order():
    """Sixteen senders each send one frame at t = 0 to h0: sixteen receive events at the
    switch at the same picosecond. They are processed in the order they were scheduled
    (flow index), so flow i is delivered exactly i wire times after flow 0 -- a heap that
    ignored the sequence number would reorder some of them."""
    n = 16
    data = star(hosts=n + 1)
    data["flow"] = [{"src": f"h{i + 1}", "dst": "h0", "size": 1000} for i in range(n)]
    _, res = simulate(data)
    one = 2 * (20_600 + D_HOST) + L_SW + L_HOST
    w = ser(1022 + WIRE_EXTRA, RATE)
    assert res.flows["finish_ps"].tolist() == [one + i * w for i in range(n)]


def test_start_time_orders_before_index():
    data = star(hosts=3)
    data["flow"] = [{"src": "h1", "dst": "h0", "size": 1000, "start": 1},
                    {"src": "h1", "dst": "h2", "size": 1000, "start": 0}]
    _, res = simulate(data)
    assert res.flows["first_tx_ps"].tolist() == [ser(1042, RATE), 0]


# ---------------------------------------------------------------------------------------
# Properties over random small scenarios.

@st.composite
def random_scenario(draw):
    kind = draw(st.sampled_from(["star", "leaf-spine", "fat-tree", "multiplane-star"]))
    topo = {"kind": kind, "rate": draw(st.sampled_from(["100G", "400G", "7G"])),
            "delay": draw(st.integers(0, 200_000))}
    if kind == "star":
        topo["hosts"] = n = draw(st.integers(2, 6))
    elif kind == "multiplane-star":
        topo["hosts"] = n = draw(st.integers(2, 4))
        topo["planes"] = draw(st.integers(1, 3))
    elif kind == "leaf-spine":
        topo.update(leaves=draw(st.integers(1, 3)), hosts_per_leaf=draw(st.integers(1, 3)),
                    spines=draw(st.integers(1, 3)),
                    uplink_rate=draw(st.sampled_from(["100G", "400G", "800G"])))
        n = topo["leaves"] * topo["hosts_per_leaf"]
        if n < 2:
            topo["hosts_per_leaf"] = n = 2
    else:
        topo["k"] = 4
        n = 16
    flows = []
    for _ in range(draw(st.integers(1, 6))):
        src = draw(st.integers(0, n - 1))
        dst = draw(st.integers(0, n - 2))
        flows.append({"src": src, "dst": dst if dst < src else dst + 1,
                      "size": draw(st.integers(1, 40_000)),
                      "start": draw(st.integers(0, 2_000_000)), "prio": draw(st.integers(0, 7))})
    return {
        "seed": draw(st.integers(0, 2**32)),
        "topology": topo,
        "switch": {"cut_through": draw(st.booleans()),
                   "ecmp": draw(st.sampled_from(["flow", "spray"])),
                   "buffer": draw(st.sampled_from(["64KiB", "32MiB"])),
                   "threshold": draw(st.sampled_from(["static", "dynamic"]))},
        "host": {"mtu": draw(st.sampled_from([1000, 4096])),
                 "ecmp": draw(st.sampled_from(["flow", "spray"]))},
        "ports": {"scheduler": draw(st.sampled_from(["strict", "dwrr"]))},
        "flow": flows,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_scenario())
def test_random_scenarios_conserve_and_never_beat_the_ideal(data):
    _, res = simulate(data)
    s = res.summary
    assert s["stop"] == "empty" and s["packets_in_flight"] == 0
    assert s["bytes_sent"] == sum(f["size"] for f in data["flow"])
    assert s["bytes_delivered"] + s["bytes_dropped"] == s["bytes_sent"]
    assert s["packets_delivered"] + s["packets_dropped"] == s["packets_sent"]
    p = res.ports
    assert np.array_equal(p["tx_frames"], p["rx_frames"][p["peer"]])
    fl = res.flows
    done = fl["finish_ps"] >= 0
    assert s["flows_completed"] == done.sum()
    if not s["drops"]:
        assert done.all()
    assert np.all(fl["first_tx_ps"] >= fl["start_ps"])
    # no flow finishes before its lone-flow ideal (switch spraying: see the test below)
    if data["switch"]["ecmp"] == "flow":
        assert np.all(fl["finish_ps"][done] - fl["start_ps"][done] >= res.ideal_fct_ps[done])
        if len(fl) == 1 and done.all():           # alone: exactly its ideal
            assert fl["finish_ps"][0] - fl["start_ps"][0] == res.ideal_fct_ps[0]


def test_switch_spray_lone_flow_never_beats_its_ideal():
    """A lone flow of a 1022 B frame then a 64 B one, sprayed at leaf0 over 3 spines: the
    short frame may take another spine than the long one and then does not queue behind
    it, so the flow ends when the long frame lands: the lone time of a 1000 B flow,
    4 x (ser(1030 B) + d) + 3 L_SW + L_HOST. ethlink.sim promises that a lone flow has
    slowdown exactly 1 (its ideal is the exact lone time), so the ideal must not exceed
    what the engine does."""
    long_alone = 4 * 20_600 + 2 * D_HOST + 2 * D_FAB + 3 * L_SW + L_HOST
    overtook = 0
    for seed in range(1, 9):
        data = leafspine(ecmp="spray")
        data["seed"] = seed
        data["topology"].update(hosts_per_leaf=1, spines=3)
        data["host"]["mtu"] = 1000
        data["flow"] = [{"src": "h0", "dst": "h1", "size": 1001}]
        _, res, t = finish_of(data)
        overtook += t == long_alone
        assert res.ideal_fct_ps[0] <= t, f"seed {seed}"
    assert overtook > 0          # the case did occur: the short frame took another spine


# ---------------------------------------------------------------------------------------
# The event queue (csrc/evq.h: a timing wheel in front of two heaps) against a plain heap.

def _heap_model(ops):
    import heapq
    heap, out = [], []
    for op, time, seq in ops:
        if op == 0:
            heapq.heappush(heap, (time, seq))
        elif not heap:
            out.append((-1, -1))
        else:
            out.append(heapq.heappop(heap) if op == 1 else heap[0])
    return out


@st.composite
def _queue_ops(draw):
    # Adds at the last popped time or later (the engine never schedules into the past):
    # the same time, within a bucket, within the wheel, past it, far past it; unique
    # sequence numbers in any order (link FIFOs add events with numbers taken earlier).
    shift = draw(st.integers(0, 12))
    slots = 1 << draw(st.integers(6, 9))
    horizon = slots << shift
    n = draw(st.integers(1, 300))
    # sequence numbers far apart do not pack into one 64-bit sort key (the merge sort)
    spread = draw(st.sampled_from([1, 1, 1 << 50]))
    seqs = [q * spread for q in draw(st.permutations(range(n)))]
    # times from zero, or close to the int64 limit (bucket arithmetic must not overflow)
    base = draw(st.sampled_from([0, 0, 2**63 - 2**42]))
    far = 1 << 40 if base == 0 else 1 << 24
    ops, now, live, k = [], base, 0, 0
    while k < n or live:
        choice = draw(st.integers(0, 9)) if k < n else 9
        if choice < 6:
            gap = draw(st.sampled_from([0, 1, 1 << shift, horizon - 1, horizon, 3 * horizon,
                                        far]))
            gap = draw(st.integers(0, gap))
            ops.append((0, now + gap, seqs[k]))
            k += 1
            live += 1
        elif choice < 8:
            ops.append((2, 0, 0))
        else:
            ops.append((1, 0, 0))
            if live:
                live -= 1
                now = _heap_model(ops)[-1][0]
    return shift, slots, ops


# Small buckets are rank-sorted where the CPU has AVX2 (csrc/evq.h evq_rank_sort), else
# quicksorted: both must give the heap's order.
SMALL_SORTS = [False] + [True] * _engine.event_queue_rank_supported()


@pytest.mark.parametrize("rank", SMALL_SORTS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_queue_ops())
def test_event_queue_pops_in_time_then_sequence_order(rank, case):
    shift, slots, ops = case
    assert _engine.event_queue_ops(ops, shift, slots, rank=rank) == _heap_model(ops)


@pytest.mark.parametrize("rank", SMALL_SORTS)
@settings(max_examples=60, deadline=None)
@given(st.integers(2, 63), st.integers(0, 40), st.sampled_from([1, 3, 1 << 13, 1 << 40]),
       st.randoms(use_true_random=False))
def test_event_queue_sorts_a_small_bucket(rank, n, shift, spread, rnd):
    # fewer than 64 events of one bucket in any order: time offsets of up to 40 bits and
    # sequence numbers up to 2^46 apart, so the packed keys take from under 31 bits (the
    # rank sort) to past 31 (quicksort) and more than 64 (the merge sort)
    seqs = [q * spread for q in range(n)]
    rnd.shuffle(seqs)
    base = 3 << shift
    times = [base + rnd.randrange(1 << shift) for _ in range(n)]
    if n > 3:
        times[:2] = [base, base + (1 << shift) - 1]     # the widest time offset
    ops = [(0, t, s) for t, s in zip(times, seqs)] + [(1, 0, 0)] * (n + 1)
    assert _engine.event_queue_ops(ops, shift, 64, rank=rank) == _heap_model(ops)


def test_event_queue_rank_needs_the_cpu_for_it():
    if _engine.event_queue_rank_supported():
        assert _engine.event_queue_ops([(0, 5, 1), (0, 4, 2), (1, 0, 0)], 4, 64, rank=True) == [(4, 2)]
    else:
        with pytest.raises(ValueError, match="AVX2"):
            _engine.event_queue_ops([], 4, 64, rank=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(64, 3000), st.integers(0, 12), st.sampled_from([1, 7, 1 << 20]), st.randoms(use_true_random=False))
def test_event_queue_sorts_a_large_bucket(n, shift, spread, rnd):
    # n events of one wheel bucket (the radix sort past 64 of them), added in any order
    # of times within the bucket and of sequence numbers, pop in (time, seq) order.
    seqs = [q * spread for q in range(n)]
    rnd.shuffle(seqs)
    base = 5 << shift
    ops = [(0, base + rnd.randrange(1 << shift), s) for s in seqs] + [(1, 0, 0)] * (n + 1)
    assert _engine.event_queue_ops(ops, shift, 64) == _heap_model(ops)


def test_event_queue_peek_past_a_bucket_then_add_before_it():
    # The loop peeks at the next event (moving the wheel to its bucket) before the current
    # event adds its own, which may fall in an earlier bucket: they must still pop first.
    shift, slots = 10, 64
    ops = [(0, 0, 0), (0, 50_000, 1), (1, 0, 0), (2, 0, 0), (0, 3_000, 2), (0, 40_000, 3),
           (1, 0, 0), (1, 0, 0), (1, 0, 0), (1, 0, 0)]
    assert _engine.event_queue_ops(ops, shift, slots) == [
        (0, 0), (50_000, 1), (3_000, 2), (40_000, 3), (50_000, 1), (-1, -1)]


def test_event_queue_rejects_a_bad_wheel():
    with pytest.raises(ValueError, match="power of 2"):
        _engine.event_queue_ops([], 10, 100)


# ---------------------------------------------------------------------------------------
# Elided transmit-done events (engine.pyx tx_start, core.pxd port_busy): a port with
# nothing else to send gets no EV_TX_DONE unless something wants it before the frame's IFG
# ends. Stops, the active time and the event count must be what the event would give.

def test_last_event_a_transmit_done_after_the_frame_arrived():
    """Zero fibre, zero latency: the switch forwards the frame as soon as its last bit is
    in, at ser(122 + 8 B), and h1 has it ser(130 B) later; the switch port's transmit-done
    comes after that, ser(122 + 20 B) after it started: the run's last event."""
    data = {"topology": {"kind": "star", "hosts": 2, "rate": RATE, "delay": 0},
            "switch": {"latency": 0}, "host": {"latency": 0}}
    sc = Scenario.from_dict(one_flow(data, "h0", "h1", 100))
    f = frame(100)
    finish = 2 * ser(f + PREAMBLE, RATE)
    done = ser(f + PREAMBLE, RATE) + ser(f + WIRE_EXTRA, RATE)
    ref = Simulation(sc)
    straight = ref.run()
    assert int(straight.flows["finish_ps"][0]) == finish
    assert straight.summary["sim_time_ps"] == done > finish
    assert ref.engine.now == done
    sim = Simulation(sc)
    first = sim.run(until=done - 1)
    assert first.stop == "until"                    # the transmit-done is still to come
    assert sim.engine.active_ps == finish
    last = sim.run()
    assert last.stop == "empty"
    assert sim.engine.active_ps == done == sim.engine.now
    assert last.summary["events"] == straight.summary["events"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["incast-dcqcn", "incast-pfc", "ls-under-rdma", "permutation-uet"]),
       cuts=st.lists(st.floats(0.0, 1.2), max_size=4), chunk=st.integers(1, 5000))
def test_runs_cut_anywhere_and_resumed_match_one_straight_run(name, cuts, chunk):
    sc = scenarios.load(name, ["run.until=300us"] if name == "ls-under-rdma" else [])
    ref = Simulation(sc)
    straight = ref.run()
    end = straight.summary["sim_time_ps"]
    sim = Simulation(sc)
    horizon = sc.run.until_ps or 2**62              # a cut never runs past the scenario's end
    for c in sorted(cuts):
        sim.run(until=min(int(c * end), horizon), chunk_events=chunk)
    res = sim.run(chunk_events=chunk)
    assert res.stop == straight.stop
    assert stable(res.summary) == stable(straight.summary)
    assert sim.engine.now == ref.engine.now


def test_packet_pool_gives_the_same_run_with_or_without_its_reservation():
    """The packet pool reserves the largest pool's address space, so it grows in place,
    and past 1 MiB of records a helper thread ("ethlink-pool", every signal blocked)
    faults its pages in ahead of the engine (csrc/pool.h). Where the reservation is
    refused (an address-space limit here; strict overcommit likewise) the pool grows by
    mremap, the engine faults its own pages and no thread starts. Either way `incast-pfc`
    (a small pool) gives tests/data/route_digests.json's digests, and the full
    `permutation-leafspine` (66 832 packets at once: the helper runs) the same summary
    and flow times both ways."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    code = ("import json, os, resource, sys\n"
            f"sys.path.insert(0, {str(tests)!r})\n"
            "if sys.argv[1] == 'limited':\n"
            "    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))\n"
            "from test_route_digests import FIXTURE, SKIP, _sha, digest\n"
            "from ethlink import scenarios\n"
            "from ethlink.sim import Simulation\n"
            "want = json.loads(FIXTURE.read_text())['incast-pfc']\n"
            "same = digest('incast-pfc', want['summary_keys']) == want\n"
            "sim = Simulation(scenarios.load('permutation-leafspine'))\n"
            "res = sim.run()\n"
            "summary = json.dumps({k: v for k, v in res.summary.items() if k not in SKIP}, sort_keys=True, default=float)\n"
            "threads = {}\n"
            "for t in os.listdir('/proc/self/task'):\n"
            "    st = dict(l.split(':\\t', 1) for l in open(f'/proc/self/task/{t}/status').read().splitlines() if ':\\t' in l)\n"
            "    threads[open(f'/proc/self/task/{t}/comm').read().strip()] = int(st['SigBlk'], 16)\n"
            "peak = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmPeak')][0]\n"
            "print(json.dumps({'same': same, 'vm_peak_gib': peak / (1 << 20), 'threads': threads,\n"
            "                  'inflight': sim.engine.counters()['packets_in_flight_max'],\n"
            "                  'leafspine': [summary, _sha(res.flows['finish_ps'], res.flows['complete_ps'])]}))")
    out = {}
    for mode in ("reserved", "limited"):
        p = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        out[mode] = json.loads(p.stdout.splitlines()[-1])
    r, lim = out["reserved"], out["limited"]
    assert r["same"] and lim["same"]
    assert r["leafspine"] == lim["leafspine"]
    assert r["inflight"] * 128 > 2 << 20                     # past where the helper starts
    assert r["vm_peak_gib"] > 100 > 16 > lim["vm_peak_gib"], out
    assert "ethlink-pool" not in lim["threads"], lim["threads"]
    sigint, sigterm = 1 << (2 - 1), 1 << (15 - 1)
    assert r["threads"]["ethlink-pool"] & sigint and r["threads"]["ethlink-pool"] & sigterm, r["threads"]
