"""Topology builders, port numbering and equal-cost shortest-path routing.

Counts come from the shapes' definitions (Al-Fares et al. 2008 for the fat-tree: k pods of
k/2 edge and k/2 aggregation switches, (k/2)^2 cores, k^3/4 hosts).
"""
from __future__ import annotations

import numpy as np
import pytest

import ethlink
from ethlink import topology as T
from ethlink.sim import Simulation, build_fabric

from conftest import G, NS, WIRE_EXTRA, ser, simulate

R, D = 400 * G, 100 * NS


def kinds_count(f: T.Fabric):
    k = np.asarray(f.kinds)
    return int((k == T.HOST).sum()), int((k == T.SWITCH).sum())


def routes(f: T.Fabric):
    pt = f.ports()
    return pt, T.route(f, pt)


def next_hops(f, pt, r, node_name, host):
    """Names of the next-hop nodes from `node_name` towards host index `host`."""
    ports = r.candidates(pt, f.hosts, f.names.index(node_name), host)
    return sorted(f.names[pt.node[pt.peer[p]]] for p in ports)


def distance(f, pt, r, node, host):
    """Hops from node index `node` to host index `host`, from the routes."""
    hops = 0
    while node != f.hosts[host]:
        node = pt.node[pt.peer[r.candidates(pt, f.hosts, node, host)[0]]]
        hops += 1
    return hops


def dense_routes(fabric: T.Fabric, ports: T.PortTable):
    """The reference: a dense (node x host) table of equal-cost next hops, by
    breadth-first search from each destination host in the graph where hosts never
    forward (ethlink's routing before per-class tables). {(node, host): [ports]}."""
    n_nodes, n_hosts = fabric.n_nodes, fabric.n_hosts
    kinds = np.asarray(fabric.kinds)
    host_node = np.asarray(fabric.hosts)
    pnode, ppeer = ports.node, ports.node[ports.peer]
    out = {}
    for h in range(n_hosts):
        d = np.full(n_nodes, -1)
        d[host_node[h]] = 0
        level = 0
        via_ok = (kinds[ppeer] == T.SWITCH) | (ppeer == host_node[h])
        while True:
            frontier = (d[ppeer] == level) & via_ok & (d[pnode] < 0)
            if not frontier.any():
                break
            d[pnode[frontier]] = level + 1
            level += 1
        for u in range(n_nodes):
            if u == host_node[h] or d[u] < 0:
                continue
            out[(u, h)] = [p for p in range(ports.first[u], ports.first[u] + ports.count[u])
                           if via_ok[p] and d[ppeer[p]] == d[u] - 1]
    return out


@pytest.mark.parametrize("fabric", [
    T.fat_tree(4, R, D, D), T.fat_tree(6, R, D, D), T.leaf_spine(3, 2, 3, R, R, D, D), T.multiplane_star(3, 4, R, D),
    T.star(5, R, D), T.ring(5, 2, R, D, D)], ids=["fat-tree-4", "fat-tree-6", "leaf-spine", "multiplane", "star", "ring"])
def test_per_class_routes_equal_the_dense_search(fabric):
    """Every (node, host) pair: the same next-hop ports, in the same order, as a dense
    per-host search; and the vectorised lookup agrees with the scalar one."""
    pt = fabric.ports()
    r = T.route(fabric, pt)
    ref = dense_routes(fabric, pt)
    for (u, h), want in ref.items():
        assert r.candidates(pt, fabric.hosts, u, h) == want, (fabric.names[u], h)
    keys = np.array(sorted(ref))
    first, count = r.next_hops(pt, fabric.hosts, keys[:, 0], keys[:, 1])
    assert count.tolist() == [len(ref[tuple(k)]) for k in keys.tolist()]
    assert first.tolist() == [ref[tuple(k)][0] for k in keys.tolist()]


# ---------------------------------------------------------------------------------------
# Shapes.

def test_star_shape():
    f = T.star(5, R, D)
    assert kinds_count(f) == (5, 1)
    assert len(f.links) == 5
    assert f.n_hosts == 5 and [f.names[n] for n in f.hosts] == [f"h{i}" for i in range(5)]


def test_multiplane_star_shape():
    f = T.multiplane_star(4, 3, R, D)
    assert kinds_count(f) == (4, 3)
    assert len(f.links) == 12
    pt = f.ports()
    assert all(pt.count[h] == 3 for h in f.hosts)           # one port per plane


@pytest.mark.parametrize("k", [4, 6, 16])
def test_fat_tree_shape(k):
    f = T.fat_tree(k, R, D, 5 * D)
    half = k // 2
    assert kinds_count(f) == (k**3 // 4, half * half + k * k)
    # host links + edge-agg links + agg-core links, k^3/4 each
    assert len(f.links) == 3 * k**3 // 4
    tiers = [ln.tier for ln in f.links]
    assert tiers.count("host") == tiers.count("fabric") == tiers.count("core") == k**3 // 4
    assert all(ln.delay_ps == 5 * D for ln in f.links if ln.tier != "host")


def test_leaf_spine_shape():
    f = T.leaf_spine(3, 4, 2, R, 2 * R, D, 5 * D)
    assert kinds_count(f) == (12, 5)
    assert len(f.links) == 3 * 2 + 12
    assert {ln.rate_bps for ln in f.links if ln.tier == "fabric"} == {2 * R}


def test_port_table_is_consistent():
    f = T.fat_tree(4, R, D, D)
    pt = f.ports()
    n_ports = 2 * len(f.links)
    assert len(pt.node) == n_ports
    assert np.array_equal(pt.peer[pt.peer], np.arange(n_ports))          # peer of peer
    assert np.all(pt.node != pt.node[pt.peer])                           # no self links
    # a node's ports are consecutive from first
    for n in range(f.n_nodes):
        assert np.all(pt.node[pt.first[n]:pt.first[n] + pt.count[n]] == n)
    assert np.array_equal(pt.rate_bps, pt.rate_bps[pt.peer])
    assert np.array_equal(pt.delay_ps, pt.delay_ps[pt.peer])


# ---------------------------------------------------------------------------------------
# Routing.

def test_fat_tree_routes_and_distances():
    f = T.fat_tree(4, R, D, D)
    pt, r = routes(f)
    h = np.asarray(f.hosts)
    # same edge: 2 hops; same pod: 4; other pod: 6
    assert [distance(f, pt, r, h[0], d) for d in (1, 2, 15)] == [2, 4, 6]
    assert all(distance(f, pt, r, h[d], d) == 0 for d in range(16))
    edge = f.names.index("edge0_0")
    assert r.dist[r.node_row[edge], r.host_class[[0, 2, 15]]].tolist() == [1, 3, 5]
    # ECMP: an edge has k/2 = 2 uplinks towards another pod, an aggregation switch 2 cores,
    # a core exactly one way down
    assert next_hops(f, pt, r, "edge0_0", 15) == ["agg0_0", "agg0_1"]
    assert next_hops(f, pt, r, "agg0_0", 15) == ["core0", "core1"]
    assert next_hops(f, pt, r, "core0", 15) == ["agg3_0"]
    assert next_hops(f, pt, r, "edge0_0", 1) == ["h1"]
    # hosts never forward: a host has routes only out of its own port
    assert next_hops(f, pt, r, "h0", 15) == ["edge0_0"]


def test_leaf_spine_routes_over_every_spine():
    f = T.leaf_spine(2, 2, 3, R, R, D, D)
    pt, r = routes(f)
    assert next_hops(f, pt, r, "leaf0", 2) == ["spine0", "spine1", "spine2"]
    assert next_hops(f, pt, r, "leaf0", 1) == ["h1"]
    assert next_hops(f, pt, r, "spine1", 3) == ["leaf1"]


def test_multiplane_host_has_one_route_per_plane():
    f = T.multiplane_star(3, 4, R, D)
    pt, r = routes(f)
    assert next_hops(f, pt, r, "h0", 2) == ["plane0", "plane1", "plane2", "plane3"]


def test_disconnected_topology_names_hosts():
    """Two components built by hand: {h0, h1} on sw0 and {h2} on sw1."""
    f = T.Fabric()
    sw0 = f.add_node("sw0", T.SWITCH, "leaf")
    sw1 = f.add_node("sw1", T.SWITCH, "leaf")
    for name, sw in (("h0", sw0), ("h1", sw0), ("h2", sw1)):
        f.connect(f.add_node(name, T.HOST, "host"), sw, R, D, "host")
    with pytest.raises(T.TopologyError) as exc:
        T.route(f, f.ports())
    msg = str(exc.value)
    assert "disconnected" in msg
    assert "h0" in msg and "h2" in msg                       # the first unreachable pair
    assert "4 unreachable pairs" in msg                      # h0,h1 <-> h2 both ways


def test_hosts_do_not_forward():
    """sw0 - hB - sw1: hB is linked to both switches but is not a router, so hA (on sw0)
    cannot reach hC (on sw1) through it."""
    f = T.Fabric()
    sw0 = f.add_node("sw0", T.SWITCH, "leaf")
    sw1 = f.add_node("sw1", T.SWITCH, "leaf")
    ha, hb, hc = (f.add_node(n, T.HOST, "host") for n in ("hA", "hB", "hC"))
    f.connect(ha, sw0, R, D, "host")
    f.connect(hb, sw0, R, D, "host")
    f.connect(hb, sw1, R, D, "host")
    f.connect(hc, sw1, R, D, "host")
    with pytest.raises(T.TopologyError, match="hA.*hC|hC.*hA"):
        T.route(f, f.ports())


def test_host_without_link_is_unreachable():
    f = T.star(2, R, D)
    f.add_node("h2", T.HOST, "host")
    with pytest.raises(T.TopologyError, match="h2"):
        T.route(f, f.ports())


def test_build_fabric_from_scenario():
    sc = ethlink.Scenario.from_dict({
        "topology": {"kind": "leaf-spine", "leaves": 4, "hosts_per_leaf": 6,
                     "oversubscription": 1.5, "uplink_rate": "200G"},
        "flow": [{"src": 0, "dst": 1, "size": 1}]})
    f = build_fabric(sc)
    # spines: ceil(6 x 400G / (1.5 x 200G)) = 8
    assert kinds_count(f) == (24, 4 + 8)


# ---------------------------------------------------------------------------------------
# Multi-plane NIC: per-packet spraying over the planes.

def multiplane(ecmp):
    return {"topology": {"kind": "multiplane-star", "hosts": 2, "planes": 4, "rate": R, "delay": D},
            "switch": {"latency": 300 * NS}, "host": {"latency": 200 * NS, "mtu": 1000, "ecmp": ecmp},
            "flow": [{"src": "h0", "dst": "h1", "size": 64 * 1000}]}


def test_multiplane_spray_uses_every_plane_in_turn():
    """A spraying NIC sends frame i on plane i mod 4: 16 frames per plane, all four planes
    busy at once, so the last frame leaves at 15 wire times."""
    sim, res = simulate(multiplane("spray"))
    h0 = sim.compiled.fabric.names.index("h0")
    pt = sim.compiled.port_table
    mine = np.nonzero(pt.node == h0)[0]
    assert res.ports["tx_frames"][mine].tolist() == [16, 16, 16, 16]
    w = ser(1022 + WIRE_EXTRA, R)
    one = 2 * (ser(1030, R) + D) + 300 * NS + 200 * NS
    assert res.flows["finish_ps"][0] == 15 * w + one


def test_multiplane_flow_hash_pins_one_plane():
    sim, res = simulate(multiplane("flow"))
    h0 = sim.compiled.fabric.names.index("h0")
    mine = np.nonzero(sim.compiled.port_table.node == h0)[0]
    assert sorted(res.ports["tx_frames"][mine].tolist()) == [0, 0, 0, 64]
    w = ser(1022 + WIRE_EXTRA, R)
    assert res.flows["finish_ps"][0] == 63 * w + 2 * (ser(1030, R) + D) + 500 * NS


def test_multiplane_spray_lone_flow_has_slowdown_one():
    """ethlink.sim promises a lone flow slowdown exactly 1; a spraying multi-plane NIC
    alone in the fabric finishes at 15 W + one-frame latency (test above), so that is its
    ideal too."""
    _, res = simulate(multiplane("spray"))
    assert res.flows_table()["slowdown"][0].as_py() == 1.0
    assert res.ideal_fct_ps[0] == res.flows["finish_ps"][0]
