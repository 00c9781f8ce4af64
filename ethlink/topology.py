"""Topologies: who is wired to whom, at what rate and delay; and shortest-path routing.

What it models: hosts (GPUs or servers, each NIC port one link) and switches joined by
full-duplex links. Builders for the shapes AI clusters use: a single-switch star (a
scale-up domain), a multi-plane star (P ports per host, one switch per plane), a two-tier
leaf-spine with a chosen oversubscription, and a three-tier fat-tree of parameter k
(Al-Fares et al., SIGCOMM 2008: k pods of k/2 edge and k/2 aggregation switches,
(k/2)^2 cores, k^3/4 hosts).

Routing is computed, not declared: for every (node, destination host) the equal-cost
next hops are the ports whose peer is one hop closer to the destination, by breadth-first
search over the graph in which hosts never forward. The result is a CSR table the engine
indexes as [node * n_hosts + dst]. The search is vectorised over destinations in chunks,
so a 1024-host fat-tree routes in about a second.

A ring of switches (hosts hanging off each) can instead be routed one way round
(`clockwise_routes`): every frame travels clockwise, so the ring's buffers depend on each
other in a cycle, the classic condition for a PFC deadlock (Hu et al., HotNets 2016).

Limits: shortest paths only (no weights, no up-down restriction beyond what shortest paths
give), except for the one-way ring.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HOST, SWITCH = 0, 1


@dataclass
class Link:
    a: int              # node index
    b: int              # node index
    rate_bps: int
    delay_ps: int
    tier: str           # "host" (host-switch), "fabric" (switch-switch), "core" ...


@dataclass
class Fabric:
    """A topology: nodes and links, hosts numbered 0..n_hosts-1 in the order added."""

    names: list[str] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    hosts: list[int] = field(default_factory=list)       # host index -> node index
    planes: int = 1

    def add_node(self, name: str, kind: int, tier: str) -> int:
        self.names.append(name)
        self.kinds.append(kind)
        self.tiers.append(tier)
        if kind == HOST:
            self.hosts.append(len(self.names) - 1)
        return len(self.names) - 1

    def connect(self, a: int, b: int, rate_bps: int, delay_ps: int, tier: str) -> None:
        self.links.append(Link(a, b, rate_bps, delay_ps, tier))

    @property
    def n_nodes(self) -> int:
        return len(self.names)

    @property
    def n_hosts(self) -> int:
        return len(self.hosts)

    def ports(self) -> "PortTable":
        """Number the ports: every node's ports are consecutive, in link order; returns
        arrays (node, peer, rate, delay, tier) and each node's first port and count."""
        n = self.n_nodes
        count = np.zeros(n, dtype=np.int64)
        for ln in self.links:
            count[ln.a] += 1
            count[ln.b] += 1
        first = np.zeros(n, dtype=np.int64)
        first[1:] = np.cumsum(count)[:-1]
        nxt = first.copy()
        n_ports = int(count.sum())
        node = np.zeros(n_ports, dtype=np.int32)
        peer = np.zeros(n_ports, dtype=np.int32)
        rate = np.zeros(n_ports, dtype=np.int64)
        delay = np.zeros(n_ports, dtype=np.int64)
        tier = np.empty(n_ports, dtype=object)
        for ln in self.links:
            pa, pb = nxt[ln.a], nxt[ln.b]
            nxt[ln.a] += 1
            nxt[ln.b] += 1
            node[pa], node[pb] = ln.a, ln.b
            peer[pa], peer[pb] = pb, pa
            rate[pa] = rate[pb] = ln.rate_bps
            delay[pa] = delay[pb] = ln.delay_ps
            tier[pa] = tier[pb] = ln.tier
        return PortTable(node, peer, rate, delay, tier, first.astype(np.int32), count.astype(np.int32))


@dataclass
class PortTable:
    node: np.ndarray
    peer: np.ndarray
    rate_bps: np.ndarray
    delay_ps: np.ndarray
    tier: np.ndarray
    first: np.ndarray
    count: np.ndarray


class TopologyError(ValueError):
    """A topology that cannot be routed (disconnected hosts, a host with no link)."""


def route(fabric: Fabric, ports: PortTable, chunk: int = 256):
    """Equal-cost shortest-path next hops for every (node, destination host).

    Returns (route_off, route_port, dist): route_port[route_off[k]:route_off[k+1]] are the
    egress ports at node k // n_hosts towards host k % n_hosts; dist[node, host] is hops.
    """
    n_nodes, n_hosts = fabric.n_nodes, fabric.n_hosts
    kinds = np.asarray(fabric.kinds, dtype=np.int8)
    host_node = np.asarray(fabric.hosts, dtype=np.int64)
    pnode = ports.node.astype(np.int64)
    ppeer_node = pnode[ports.peer]
    unreached = np.iinfo(np.int16).max
    dist = np.full((n_nodes, n_hosts), unreached, dtype=np.int16)
    keys, outs = [], []
    for lo in range(0, n_hosts, chunk):
        hi = min(n_hosts, lo + chunk)
        dsts = np.arange(lo, hi)
        d = np.full((n_nodes, hi - lo), unreached, dtype=np.int16)
        d[host_node[dsts], np.arange(hi - lo)] = 0
        # A peer may be crossed if it is a switch or is the destination itself.
        via_ok = (kinds[ppeer_node] == SWITCH)[:, None] | (ppeer_node[:, None] == host_node[dsts][None, :])
        level = 0
        while True:
            frontier = (d[ppeer_node] == level) & via_ok & (d[pnode] == unreached)
            if not frontier.any():
                break
            p_idx, h_idx = np.nonzero(frontier)
            d[pnode[p_idx], h_idx] = level + 1
            level += 1
        dist[:, lo:hi] = d
        reach_peer = d[ppeer_node].astype(np.int32)
        here = d[pnode].astype(np.int32)
        hop = via_ok & (here != unreached) & (reach_peer == here - 1)
        p_idx, h_idx = np.nonzero(hop)
        keys.append(pnode[p_idx] * n_hosts + dsts[h_idx])
        outs.append(p_idx.astype(np.int32))
    bad = np.argwhere(dist[host_node] == unreached)
    if len(bad):
        a, b = bad[0]
        raise TopologyError(
            f"topology is disconnected: host {fabric.names[host_node[a]]} cannot reach host "
            f"{fabric.names[host_node[b]]} ({len(bad)} unreachable pairs); check the links")
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    out = np.concatenate(outs) if outs else np.zeros(0, dtype=np.int32)
    order = np.argsort(key, kind="stable")
    key, out = key[order], out[order]
    counts = np.bincount(key, minlength=n_nodes * n_hosts)
    route_off = np.zeros(n_nodes * n_hosts + 1, dtype=np.int64)
    np.cumsum(counts, out=route_off[1:])
    if route_off[-1] >= 2**31:
        raise TopologyError("routing table too large for this engine (2**31 entries)")
    return route_off.astype(np.int32), out, dist


# ---------------------------------------------------------------------------------------
# Builders. Rates in bit/s, delays in ps.

def star(n_hosts: int, rate_bps: int, delay_ps: int) -> Fabric:
    """N hosts on one switch: a scale-up domain."""
    f = Fabric()
    sw = f.add_node("sw0", SWITCH, "leaf")
    for h in range(n_hosts):
        f.connect(f.add_node(f"h{h}", HOST, "host"), sw, rate_bps, delay_ps, "host")
    return f


def multiplane_star(n_hosts: int, planes: int, rate_bps: int, delay_ps: int) -> Fabric:
    """Each host has `planes` ports, port p on plane switch p (planes are disjoint)."""
    f = Fabric(planes=planes)
    sws = [f.add_node(f"plane{p}", SWITCH, "leaf") for p in range(planes)]
    for h in range(n_hosts):
        hn = f.add_node(f"h{h}", HOST, "host")
        for sw in sws:
            f.connect(hn, sw, rate_bps, delay_ps, "host")
    return f


def leaf_spine(leaves: int, hosts_per_leaf: int, spines: int, host_rate_bps: int,
               uplink_rate_bps: int, host_delay_ps: int, fabric_delay_ps: int) -> Fabric:
    """Two tiers; every leaf has one uplink to every spine. Oversubscription is
    hosts_per_leaf * host_rate / (spines * uplink_rate)."""
    f = Fabric()
    spine_ids = [f.add_node(f"spine{s}", SWITCH, "spine") for s in range(spines)]
    for l in range(leaves):
        leaf = f.add_node(f"leaf{l}", SWITCH, "leaf")
        for s in spine_ids:
            f.connect(leaf, s, uplink_rate_bps, fabric_delay_ps, "fabric")
        for h in range(hosts_per_leaf):
            hn = f.add_node(f"h{l * hosts_per_leaf + h}", HOST, "host")
            f.connect(hn, leaf, host_rate_bps, host_delay_ps, "host")
    return f


def ring(switches: int, hosts_per_switch: int, rate_bps: int, host_delay_ps: int,
         fabric_delay_ps: int, ring_rate_bps: int | None = None) -> Fabric:
    """Switches ring0..ringN-1 joined in a ring (ring i -> ring i+1 is its first port),
    hosts h(i*hps)..h(i*hps+hps-1) on ring i."""
    f = Fabric()
    sws = [f.add_node(f"ring{i}", SWITCH, "leaf") for i in range(switches)]
    for i in range(switches):
        f.connect(sws[i], sws[(i + 1) % switches], ring_rate_bps or rate_bps, fabric_delay_ps, "fabric")
    for i in range(switches):
        for _ in range(hosts_per_switch):
            f.connect(f.add_node(f"h{len(f.hosts)}", HOST, "host"), sws[i], rate_bps, host_delay_ps, "host")
    return f


def clockwise_routes(fabric: Fabric, ports: PortTable):
    """Routes of a ring that always go clockwise (to the next switch), never the short way."""
    route_off, route_port, dist = route(fabric, ports)
    n_nodes, n_hosts = fabric.n_nodes, fabric.n_hosts
    kinds = np.asarray(fabric.kinds)
    host_node = np.asarray(fabric.hosts)
    peer_node = ports.node[ports.peer]
    table = [[route_port[route_off[k]:route_off[k + 1]].tolist()] for k in range(n_nodes * n_hosts)]
    for u in np.nonzero(kinds == SWITCH)[0]:
        mine = np.arange(ports.first[u], ports.first[u] + ports.count[u])
        to_switch = [p for p in mine if kinds[peer_node[p]] == SWITCH]
        clockwise = [p for p in to_switch if fabric.names[peer_node[p]] ==
                     f"ring{(int(fabric.names[u][4:]) + 1) % sum(kinds == SWITCH)}"]
        for d in range(n_hosts):
            local = [p for p in mine if peer_node[p] == host_node[d]]
            table[u * n_hosts + d] = [local or clockwise]
    counts = np.array([len(t[0]) for t in table], dtype=np.int64)
    off = np.zeros(len(table) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    flat = np.array([p for t in table for p in t[0]], dtype=np.int32)
    return off.astype(np.int32), flat, dist


def fat_tree(k: int, rate_bps: int, host_delay_ps: int, fabric_delay_ps: int,
             fabric_rate_bps: int | None = None) -> Fabric:
    """Three-tier fat-tree of even k: k^3/4 hosts at full bisection bandwidth (when the
    switch-switch links run at the host rate)."""
    fabric_rate_bps = fabric_rate_bps or rate_bps
    half = k // 2
    f = Fabric()
    cores = [f.add_node(f"core{c}", SWITCH, "core") for c in range(half * half)]
    host = 0
    for pod in range(k):
        aggs = [f.add_node(f"agg{pod}_{a}", SWITCH, "agg") for a in range(half)]
        for a, agg in enumerate(aggs):
            for c in range(half):
                f.connect(agg, cores[a * half + c], fabric_rate_bps, fabric_delay_ps, "core")
        for e in range(half):
            edge = f.add_node(f"edge{pod}_{e}", SWITCH, "leaf")
            for agg in aggs:
                f.connect(edge, agg, fabric_rate_bps, fabric_delay_ps, "fabric")
            for _ in range(half):
                f.connect(f.add_node(f"h{host}", HOST, "host"), edge, rate_bps, host_delay_ps, "host")
                host += 1
    return f
