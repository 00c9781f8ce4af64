"""Scenario validation, units, --set overrides, built-in scenarios and workload generators.

A bad scenario must fail before anything is simulated, with a ScenarioError whose message
names the field (as a dotted path) and says what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from ethlink import scenarios, units, workloads
from ethlink.scenario import Scenario, ScenarioError, apply_override, n_hosts, spine_count

BASE = {"topology": {"kind": "star", "hosts": 4},
        "flow": [{"src": "h0", "dst": "h1", "size": 1000}]}


def build(mutate=None, overrides=()):
    d = copy.deepcopy(BASE)
    if mutate:
        mutate(d)
    return Scenario.from_dict(d, overrides)


def error_of(mutate=None, overrides=()) -> str:
    with pytest.raises(ScenarioError) as exc:
        build(mutate, overrides)
    return str(exc.value)


# ---------------------------------------------------------------------------------------
# Units.

@pytest.mark.parametrize("text,bps", [
    ("400G", 400 * 10**9), ("400Gbps", 400 * 10**9), ("400 Gb/s", 400 * 10**9),
    ("1.6T", 1_600 * 10**9), ("25g", 25 * 10**9), (100, 100), ("10M", 10**7)])
def test_rate_units(text, bps):
    assert units.rate_bps(text) == bps


@pytest.mark.parametrize("text,ps", [
    ("1.5us", 1_500_000), ("100ns", 100_000), ("2ms", 2 * 10**9), ("1s", 10**12),
    (1500, 1500), ("3ps", 3), ("0.5ns", 500), (2.0, 2)])
def test_time_units(text, ps):
    assert units.time_ps(text) == ps


@pytest.mark.parametrize("text,nbytes", [
    ("16MiB", 16 * 2**20), ("4KiB", 4096), ("1MB", 10**6), ("64", 64), (9000, 9000),
    ("1GiB", 2**30)])
def test_size_units(text, nbytes):
    assert units.size_bytes(text) == nbytes


@pytest.mark.parametrize("fn,value,needle", [
    (units.rate_bps, "400X", "unknown unit 'X'"),
    (units.rate_bps, "fast", "cannot read"),
    (units.time_ps, "1.5ps", "not a whole number"),
    (units.size_bytes, True, "expected a size"),
    (units.size_bytes, 1.5, "whole number"),
    (units.time_ps, [1], "expected a time")])
def test_unit_errors(fn, value, needle):
    with pytest.raises(units.UnitError, match=needle):
        fn(value)


def test_fmt_helpers():
    assert units.fmt_time(1_234_567) == "1.235 us"
    assert units.fmt_time(999) == "999 ps"
    assert units.fmt_rate(400e9) == "400 Gb/s"


# ---------------------------------------------------------------------------------------
# Defaults: the documented 400G defaults.

def test_defaults():
    sc = build()
    t, sw, h, p, r = sc.topology, sc.switch, sc.host, sc.ports, sc.run
    assert (t.rate_bps, t.uplink_rate_bps, t.delay_ps, t.fabric_delay_ps) == (400 * 10**9, 400 * 10**9, 100_000, 100_000)
    assert (sw.buffer_bytes, sw.threshold, sw.alpha, sw.queue_limit_bytes) == (32 * 2**20, "dynamic", 1.0, 32 * 2**20)
    assert (sw.latency_ps, sw.cut_through, sw.ecmp) == (300_000, False, "flow")
    assert (h.latency_ps, h.mtu, h.ecmp) == (200_000, 4096, "flow")
    assert (p.scheduler, p.weights, p.quantum) == ("strict", (1,) * 8, 9216)
    assert (r.until_ps, r.ttl, r.trace) == (0, 64, "off")
    assert sc.seed == 1
    assert sc.host_names == ["h0", "h1", "h2", "h3"]
    assert sc.flows[0].start_ps == 0 and sc.flows[0].prio == 0


def test_scenario_is_frozen():
    sc = build()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sc.seed = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        sc.topology.hosts = 9


def test_fabric_delay_and_uplink_rate_default_to_host_values():
    sc = build(lambda d: d["topology"].update(rate="100G", delay="1us"))
    assert sc.topology.uplink_rate_bps == 100 * 10**9
    assert sc.topology.fabric_delay_ps == 10**6


def test_spines_derived_from_oversubscription():
    sc = scenarios.load("permutation-leafspine")
    assert spine_count(sc.topology) == 8                  # 16 x 400G / (2 x 400G)
    sc = scenarios.load("permutation-leafspine", ["topology.oversubscription=3.0"])
    assert spine_count(sc.topology) == 6                  # ceil(16 / 3)
    sc = scenarios.load("permutation-leafspine", ["topology.spines=5"])
    assert spine_count(sc.topology) == 5


# ---------------------------------------------------------------------------------------
# Bad scenarios: the error names the field and what is allowed.

BAD = [
    ("negative rate", lambda d: d["topology"].update(rate=-5), "topology.rate", "positive"),
    ("negative rate text", lambda d: d["topology"].update(rate="-400G"), "topology.rate", "400G"),
    ("unknown rate unit", lambda d: d["topology"].update(rate="400X"), "topology.rate", "unknown unit 'X'"),
    ("zero rate", lambda d: d["topology"].update(rate=0), "topology.rate", "positive"),
    ("absurd rate", lambda d: d["topology"].update(rate="1000T"), "topology.rate", "beyond"),
    ("negative delay", lambda d: d["topology"].update(delay=-1), "topology.delay", ">= 0"),
    ("unknown node", lambda d: d["flow"][0].update(dst="h99"), "flow[0].dst", "h99"),
    ("unknown node index", lambda d: d["flow"][0].update(src=4), "flow[0].src", "h0..h3"),
    ("node not a host", lambda d: d["flow"][0].update(src="sw0"), "flow[0].src", "host"),
    ("zero-size buffer", lambda d: d.update(switch={"buffer": 0}), "switch.buffer", ">= 18432"),
    ("zero-size buffer text", lambda d: d.update(switch={"buffer": "0B"}), "switch.buffer", "got 0"),
    ("queue over buffer", lambda d: d.update(switch={"buffer": "1MiB", "queue_limit": "2MiB"}),
     "switch.queue_limit", "exceeds switch.buffer"),
    ("unknown key", lambda d: d["topology"].update(hostz=3), "topology.hostz", "did you mean 'hosts'"),
    ("unknown section", lambda d: d.update(switcj={}), "switcj", "did you mean 'switch'"),
    ("unknown flow key", lambda d: d["flow"][0].update(sise=3), "flow[0].sise", "did you mean 'size'"),
    ("string for int", lambda d: d["topology"].update(hosts="8"), "topology.hosts", "expected an integer"),
    ("bool for int", lambda d: d["topology"].update(hosts=True), "topology.hosts", "expected an integer"),
    ("float for int", lambda d: d["topology"].update(hosts=8.0), "topology.hosts", "expected an integer"),
    ("too few hosts", lambda d: d["topology"].update(hosts=1), "topology.hosts", "2.."),
    ("odd k", lambda d: d.update(topology={"kind": "fat-tree", "k": 5}), "topology.k", "even"),
    ("bad kind", lambda d: d["topology"].update(kind="torus"), "topology.kind", "star, multiplane-star"),
    ("bad threshold", lambda d: d.update(switch={"threshold": "statc"}), "switch.threshold", "static, dynamic"),
    ("bad alpha", lambda d: d.update(switch={"alpha": 0}), "switch.alpha", "(0,"),
    ("bad bool", lambda d: d.update(switch={"cut_through": "yes"}), "switch.cut_through", "true or false"),
    ("bad ecmp", lambda d: d.update(switch={"ecmp": "random"}), "switch.ecmp", "flow, spray"),
    ("src == dst", lambda d: d["flow"][0].update(dst="h0"), "flow[0]", "same host"),
    ("missing size", lambda d: d["flow"][0].pop("size"), "flow[0].size", "required"),
    ("zero size", lambda d: d["flow"][0].update(size=0), "flow[0].size", ">= 1"),
    ("prio 8", lambda d: d["flow"][0].update(prio=8), "flow[0].prio", "0..7"),
    ("flow not array", lambda d: d.update(flow={"src": 0}), "flow", "array of tables"),
    ("incast senders > hosts", lambda d: d.update(workload=[{"kind": "incast", "size": 100, "senders": 4}]),
     "workload[0].senders", "1..3"),
    ("incast receiver sends", lambda d: d.update(workload=[{"kind": "incast", "size": 100, "senders": ["h0", "h1"]}]),
     "workload[0].senders", "receiver h0"),
    ("incast bad sender", lambda d: d.update(workload=[{"kind": "incast", "size": 100, "senders": ["h1", "h9"]}]),
     "workload[0].senders[1]", "h9"),
    ("workload kind", lambda d: d.update(workload=[{"kind": "gather", "size": 1}]), "workload[0].kind", "incast, permutation, alltoall"),
    ("workload no kind", lambda d: d.update(workload=[{"size": 1}]), "workload[0].kind", "required"),
    ("workload unknown key", lambda d: d.update(workload=[{"kind": "alltoall", "size": 1, "receiver": 0}]),
     "workload[0].receiver", "unknown key"),
    ("mtu", lambda d: d.update(host={"mtu": 9001}), "host.mtu", "64..9000"),
    ("weights", lambda d: d.update(ports={"weights": [1, 2]}), "ports.weights", "8 integers"),
    ("weight zero", lambda d: d.update(ports={"weights": [0] * 8}), "ports.weights", "1..1000"),
    ("quantum", lambda d: d.update(ports={"quantum": 100}), "ports.quantum", "9216.."),
    ("scheduler", lambda d: d.update(ports={"scheduler": "wfq"}), "ports.scheduler", "strict, dwrr"),
    ("ttl", lambda d: d.update(run={"ttl": 1}), "run.ttl", "2..255"),
    ("trace", lambda d: d.update(run={"trace": "all"}), "run.trace", "off, endpoints, hop"),
    ("until", lambda d: d.update(run={"until": "soon"}), "run.until", "cannot read"),
    ("seed", lambda d: d.update(seed=-1), "seed", "0.."),
    ("no traffic", lambda d: d.pop("flow"), "the scenario has no traffic", "[[workload]]"),
    ("section not table", lambda d: d.update(switch=3), "switch", "expected a table"),
]


@pytest.mark.parametrize("mutate,field,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_scenario_names_the_field(mutate, field, needle):
    msg = error_of(mutate)
    assert msg.startswith(field), msg
    assert needle in msg, msg


def test_error_is_raised_before_any_simulation(monkeypatch):
    """Validation happens in Scenario.from_dict: the engine is never constructed."""
    import ethlink.sim
    monkeypatch.setattr(ethlink.sim, "Simulation", None)
    with pytest.raises(ScenarioError):
        build(lambda d: d["topology"].update(rate="400X"))


# ---------------------------------------------------------------------------------------
# --set overrides.

def test_override_sets_nested_values_and_parses_units_and_numbers():
    sc = build(overrides=["topology.hosts=16", "topology.rate=100G", "flow.0.size=2MiB",
                          "switch.cut_through=true", "seed=9", "flow.0.dst=h7"])
    assert sc.topology.hosts == 16 and sc.topology.rate_bps == 100 * 10**9
    assert sc.flows[0].size == 2 * 2**20 and sc.flows[0].dst == 7
    assert sc.switch.cut_through is True and sc.seed == 9


def test_override_with_quoted_toml_string():
    sc = build(overrides=['topology.delay="2us"'])
    assert sc.topology.delay_ps == 2 * 10**6


def test_override_creates_missing_section():
    sc = build(overrides=["switch.latency=1us"])
    assert sc.switch.latency_ps == 10**6


@pytest.mark.parametrize("item,needle", [
    ("topology.hosts", "expected key=value"),
    ("workload.0.size=3", "no [[workload]]"),
    ("flow.5.size=3", "index 5 out of range"),
    ("flow.x.size=3", "'x' must be a list index"),
    ("topology.hosts=abc", "topology.hosts: expected an integer"),
    ("topology.hostz=3", "topology.hostz: unknown key"),
    ("topology.rate=400X", "topology.rate: unknown unit"),
])
def test_override_errors(item, needle):
    assert needle in error_of(overrides=[item])


def test_apply_override_does_not_touch_the_source():
    d = copy.deepcopy(BASE)
    sc = Scenario.from_dict(d, ["topology.hosts=6"])
    assert d["topology"]["hosts"] == 4
    assert sc.with_overrides("topology.hosts=5").topology.hosts == 5
    assert sc.topology.hosts == 6
    apply_override(d, "topology.hosts=7")
    assert d["topology"]["hosts"] == 7


# ---------------------------------------------------------------------------------------
# TOML files and built-ins.

def test_from_toml(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('name = "t"\n[topology]\nkind = "star"\nhosts = 3\n'
                 '[[flow]]\nsrc = "h0"\ndst = "h2"\nsize = "4KiB"\nstart = "1us"\nprio = 3\n')
    sc = Scenario.from_toml(p)
    assert sc.name == "t"
    assert sc.flows[0] == type(sc.flows[0])(src=0, dst=2, size=4096, start_ps=10**6, prio=3)


def test_from_toml_errors(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        Scenario.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[topology\nkind = 1\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        Scenario.from_toml(bad)


def test_builtins_listed_and_valid():
    assert {"alltoall-fattree", "incast-raw", "permutation-leafspine"} <= set(scenarios.names())
    assert scenarios.names() == sorted(scenarios.names())
    for name in scenarios.names():
        sc = scenarios.load(name)
        assert sc.name == name
        assert scenarios.describe(name)


def test_builtin_incast_raw_is_the_issue_scenario():
    sc = scenarios.load("incast-raw")
    t, w = sc.topology, sc.workloads[0]
    assert (t.kind, t.hosts, t.rate_bps) == ("star", 65, 400 * 10**9)
    assert (w["kind"], w["receiver"], len(w["senders"]), w["size"]) == ("incast", 0, 64, 2**20)


def test_builtin_alltoall_fattree_is_1024_hosts():
    sc = scenarios.load("alltoall-fattree")
    assert sc.topology.kind == "fat-tree" and sc.topology.k == 16
    assert n_hosts(sc.topology) == 1024


def test_unknown_builtin():
    with pytest.raises(ScenarioError, match="no built-in scenario 'nope'.*incast-raw"):
        scenarios.load("nope")


# ---------------------------------------------------------------------------------------
# Workload generators.

def test_incast_workload_columns():
    c = workloads.incast([1, 2, 3], 0, 500, start_ps=10, prio=2, stagger_ps=7)
    assert c["src"].tolist() == [1, 2, 3] and c["dst"].tolist() == [0, 0, 0]
    assert c["start_ps"].tolist() == [10, 17, 24]
    assert c["size"].tolist() == [500] * 3 and c["prio"].tolist() == [2] * 3


@pytest.mark.parametrize("n", [2, 3, 17, 128])
def test_permutation_is_a_derangement(n):
    c = workloads.permutation(n, 100, seed=5)
    assert sorted(c["dst"].tolist()) == list(range(n))        # each host receives once
    assert np.all(c["src"] != c["dst"])                        # nobody sends to itself
    again = workloads.permutation(n, 100, seed=5)
    assert np.array_equal(c["dst"], again["dst"])              # seeded


def test_alltoall_every_ordered_pair_once():
    n = 9
    c = workloads.alltoall(n, 100)
    pairs = set(zip(c["src"].tolist(), c["dst"].tolist()))
    assert len(c["src"]) == n * (n - 1) == len(pairs)
    assert all(s != d for s, d in pairs)


def test_expand_flows_then_workloads():
    sc = build(lambda d: d.update(workload=[{"kind": "incast", "size": 10, "senders": 2, "receiver": "h3"}]))
    cols = workloads.expand(sc)
    assert cols["src"].tolist() == [0, 0, 1] and cols["dst"].tolist() == [1, 3, 3]
    assert cols["size"].tolist() == [1000, 10, 10]


def test_permutation_seed_defaults_to_scenario_seed():
    mk = lambda seed, wseed: build(lambda d: (d.pop("flow"), d.update(  # noqa: E731
        seed=seed, topology={"kind": "star", "hosts": 32},
        workload=[{"kind": "permutation", "size": 10, "seed": wseed}])))
    a, b = workloads.expand(mk(1, 0)), workloads.expand(mk(2, 0))
    assert not np.array_equal(a["dst"], b["dst"])
    c, d = workloads.expand(mk(1, 7)), workloads.expand(mk(2, 7))
    assert np.array_equal(c["dst"], d["dst"])


def test_a_dynamic_threshold_below_the_largest_frame_is_warned_and_drops():
    """alpha x shared pool below the largest frame: such lossy frames are dropped even into
    an empty queue. The run warns with the field and the fix, and raw full-MTU frames are
    all lost; with room for the largest frame, no warning and frames get through."""
    from ethlink.scenario import max_frame_bytes
    from ethlink.sim import Simulation
    base = scenarios.load("incast-lossy", ["workload.0.senders=2", "workload.0.size=64KiB",
                                           "workload.0.transport=raw", "workload.0.verb=raw"])
    frame, buf = max_frame_bytes(base), base.switch.buffer_bytes
    low = (base.host.mtu + 22 - 1) / buf        # below a raw full-MTU frame (MTU + 22 B)
    s = Simulation(base.with_overrides(f"switch.alpha={low}")).run().summary
    assert any(w.startswith(f"switch.alpha {low:g} x the shared pool") and "Raise switch.alpha" in w
               for w in s["warnings"]), s["warnings"]
    assert s["bytes_delivered"] == 0 and s["drops"]["queue_limit"] == s["packets_sent"]
    s = Simulation(base.with_overrides(f"switch.alpha={(frame + 1) / buf}")).run().summary
    assert not any("x the shared pool" in w for w in s["warnings"])
    assert s["bytes_delivered"] > 0
