"""Topologies: who is wired to whom, at what rate and delay; and shortest-path routing.

What it models: hosts (GPUs or servers, each NIC port one link) and switches joined by
full-duplex links. Builders for the shapes AI clusters use: a single-switch star (a
scale-up domain), a multi-plane star (P ports per host, one switch per plane), a two-tier
leaf-spine with a chosen oversubscription, and a three-tier fat-tree of parameter k
(Al-Fares et al., SIGCOMM 2008: k pods of k/2 edge and k/2 aggregation switches,
(k/2)^2 cores, k^3/4 hosts).

Routing is computed, not declared: for every (node, destination host) the equal-cost
next hops are the ports whose peer is one hop closer to the destination, by breadth-first
search over the graph in which hosts never forward. Hosts linked to the same switches
(a leaf's hosts) are one destination class: every router's next hops towards them are
the same, except at those switches, where they are the links to the host itself. So the
tables (`Routes`) are per router (switch, or host with several ports) and per class,
with each distinct set of next hops stored once: a 101,306-host fat-tree (k = 74) needs
116 MB, where a dense (node x host) table would need over 44 GB. The search itself is C
(csrc/routing.pyx).

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


UNREACHED = np.iinfo(np.int16).max


@dataclass
class Routes:
    """Equal-cost next hops of every router (switch, or host with several ports) towards
    every destination class (hosts attached to the same set of switches).

    The next hops at node u towards host h: if u is a host with one port, that port; if u
    is linked to h, its links to h (u's table entry for h's class is -1); else the ports
    of set `table[row(u) * n_classes + host_class[h]]`, i.e.
    `set_port[set_off[i]:set_off[i + 1]]` (-1: none).
    Candidates are always in ascending port order (the engine picks one by index).
    `dist[row, class]` counts hops from the router to any host of the class (1 when linked
    to it).
    """

    node_row: np.ndarray        # int32 per node: its row, -1 for a host with one port
    host_class: np.ndarray      # int32 per host
    n_classes: int
    table: np.ndarray           # int32 [n_rows * n_classes] -> set index or -1
    set_off: np.ndarray         # int32 [n_sets + 1]
    set_port: np.ndarray        # int32, the sets' ports
    dist: np.ndarray            # int16 [n_rows, n_classes]; UNREACHED if none

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.node_row, self.host_class, self.table, self.set_off,
                                      self.set_port, self.dist))

    def candidates(self, ports: "PortTable", host_node, node: int, dst: int) -> list[int]:
        """Every next-hop port at `node` towards host `dst`, in the order the engine
        indexes them."""
        hn = int(host_node[dst])
        linked = [int(ports.peer[p]) for p in range(ports.first[hn], ports.first[hn] + ports.count[hn])
                  if ports.node[ports.peer[p]] == node]
        if linked:
            return linked
        row = int(self.node_row[node])
        if row < 0:
            return [int(ports.first[node])]
        sid = int(self.table[row * self.n_classes + self.host_class[dst]])
        return [] if sid < 0 else self.set_port[self.set_off[sid]:self.set_off[sid + 1]].tolist()

    def next_hops(self, ports: "PortTable", host_node, nodes, dsts):
        """(first candidate port, number of candidates) at each `nodes[i]` towards host
        `dsts[i]` (vectorised); the first port is -1 where there is none. As the engine's
        lookup (csrc/nic.pxd route_count)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        dsts = np.asarray(dsts, dtype=np.int64)
        hn = np.asarray(host_node, dtype=np.int64)[dsts]
        first = np.full(len(nodes), -1, dtype=np.int64)
        count = np.zeros(len(nodes), dtype=np.int64)
        # linked to the destination: its links to it, in port order
        for j in range(int(ports.count[hn].max()) if len(hn) else 0):
            has = j < ports.count[hn]
            pp = ports.peer[np.where(has, ports.first[hn] + j, 0)]
            adj = has & (ports.node[pp] == nodes)
            first = np.where(adj & (count == 0), pp, first)
            count += adj
        row = self.node_row[nodes]
        single = (count == 0) & (row < 0)
        first = np.where(single, ports.first[nodes], first)
        count = np.where(single, 1, count)
        via = (count == 0) & (row >= 0)
        sid = np.where(via, self.table[np.where(via, row, 0) * self.n_classes + self.host_class[dsts]], -1)
        ends = np.append(self.set_off, self.set_off[-1])         # so that sid + 1 exists even with no set
        off = ends[np.maximum(sid, 0)]
        n = np.where(sid >= 0, ends[np.maximum(sid, 0) + 1] - off, 0)
        sp = np.append(self.set_port, -1)
        first = np.where(via & (n > 0), sp[np.minimum(off, len(sp) - 1)], first)
        count = np.where(via, n, count)
        return first, count


def _attach(fabric: Fabric, ports: PortTable):
    """Each host's class (hosts linked to the same sorted set of nodes share one) and,
    per class, its attachment nodes padded with -1: (host_class, members)."""
    host_node = np.asarray(fabric.hosts, dtype=np.int64)
    cnt = ports.count[host_node]
    width = max(int(cnt.max()) if len(cnt) else 1, 1)
    att = np.full((len(host_node), width), -1, dtype=np.int64)
    for j in range(width):
        has = j < cnt
        att[has, j] = ports.node[ports.peer[ports.first[host_node[has]] + j]]
    att.sort(axis=1)
    att = np.where(att < 0, np.iinfo(np.int64).max, att)
    att.sort(axis=1)
    att = np.where(att == np.iinfo(np.int64).max, -1, att)
    members, first, host_class = np.unique(att, axis=0, return_index=True, return_inverse=True)
    return host_class.reshape(-1).astype(np.int32), members


def route(fabric: Fabric, ports: PortTable) -> Routes:
    """Equal-cost shortest-path next hops (see Routes), by breadth-first search from every
    destination class over the graph in which hosts never forward.

    NOTE: memory grows with routers x classes (for a fat-tree, switches x edge switches:
    116 MB at k = 74), not nodes x hosts. The search runs in C (csrc/routing.pyx,
    ethlink._routing); this function prepares its arrays and stores the results."""
    from . import _routing

    n_nodes = fabric.n_nodes
    kinds = np.asarray(fabric.kinds, dtype=np.int8)
    pnode = ports.node.astype(np.int64)
    ppeer = pnode[ports.peer]
    host_class, members = _attach(fabric, ports)
    n_classes = len(members)
    router = (kinds == SWITCH) | (ports.count > 1)
    node_row = np.full(n_nodes, -1, dtype=np.int32)
    node_row[router] = np.arange(int(router.sum()), dtype=np.int32)
    n_rows = int(router.sum())
    is_sw = kinds == SWITCH
    # switch -> switch links, as a CSR over rows (ports are grouped by node, so sorted)
    ff = np.nonzero(is_sw[pnode] & is_sw[ppeer])[0]
    adj_off = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(node_row[pnode[ff]], minlength=n_rows), out=adj_off[1:])
    adj_row = node_row[ppeer[ff]].astype(np.int32)
    seeds = np.where((members >= 0) & is_sw[np.maximum(members, 0)], node_row[np.maximum(members, 0)], -1)
    hn = np.nonzero(router & ~is_sw)[0]
    hp = np.concatenate([np.arange(ports.first[h], ports.first[h] + ports.count[h]) for h in hn]) \
        if len(hn) else np.zeros(0, dtype=np.int64)
    hp = hp[is_sw[ppeer[hp]]]
    host_off = np.zeros(len(hn) + 1, dtype=np.int32)
    np.cumsum(np.bincount(np.searchsorted(hn, pnode[hp]), minlength=len(hn)), out=host_off[1:])
    # every port of a router, in port order, with its peer's row (-1 unless a switch)
    rp = np.nonzero(router[pnode])[0]
    port_off = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(node_row[pnode[rp]], minlength=n_rows), out=port_off[1:])
    rv = np.where(is_sw[ppeer[rp]], node_row[ppeer[rp]], -1).astype(np.int32)
    key = _port_keys(len(rp))
    dist = np.empty((n_rows, n_classes), dtype=np.int16)
    hashes = np.empty((n_rows, n_classes), dtype=np.uint64)
    _routing.class_search(n_rows, adj_off, adj_row, np.ascontiguousarray(seeds, dtype=np.int32),
                          node_row[hn].astype(np.int32), host_off, node_row[ppeer[hp]].astype(np.int32),
                          port_off, rv, key, dist, hashes)
    _check_reachable(fabric, ports, node_row, host_class, members, dist)
    # NOTE: a next-hop set is named by the XOR of its ports' random 64-bit keys; equal
    # hashes are taken as equal sets (a collision among ~1e6 sets has odds ~1e-8).
    flat = hashes.reshape(-1)
    uniq, rep, inv = np.unique(flat, return_index=True, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    nonempty = uniq != 0
    set_id = np.cumsum(nonempty) - 1
    table = np.where(nonempty[inv], set_id[inv], -1).astype(np.int32)
    # a router linked to a class's hosts has no set for it: the engine then takes its links
    for j in range(members.shape[1]):
        m = members[:, j] >= 0
        rows = node_row[np.where(m, members[:, j], 0)]
        ok = m & (rows >= 0)
        table[rows[ok].astype(np.int64) * n_classes + np.nonzero(ok)[0]] = -1
    rep = rep[nonempty]
    rep_row, rep_cls = rep // n_classes, rep % n_classes
    row_node = np.nonzero(router)[0]
    counts, port_lists = [], []
    pos = np.searchsorted(rp, ports.first[row_node])
    ends = np.concatenate((pos[1:], [len(rp)]))
    for j in range(int((ends - pos).max()) if len(pos) else 0):
        idx = pos[rep_row] + j
        has = idx < ends[rep_row]
        idx = np.where(has, idx, 0)
        v = rv[idx]
        here = dist[rep_row, rep_cls].astype(np.int32)
        ok = has & (v >= 0) & (dist[np.maximum(v, 0), rep_cls].astype(np.int32) == here - 1)
        counts.append(ok)
        port_lists.append(np.where(ok, rp[idx], -1))
    if port_lists:
        cand = np.stack(port_lists, axis=1)
        ok = np.stack(counts, axis=1)
        set_off = np.zeros(len(rep) + 1, dtype=np.int64)
        np.cumsum(ok.sum(axis=1), out=set_off[1:])
        set_port = cand[ok].astype(np.int32)
    else:
        set_off, set_port = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32)
    if set_off[-1] >= 2**31 or n_rows * n_classes >= 2**31:
        raise TopologyError("routing table too large for this engine (2**31 entries)")
    return Routes(node_row, host_class, n_classes, table, set_off.astype(np.int32), set_port, dist)


def _port_keys(n: int) -> np.ndarray:
    """n distinct-looking nonzero 64-bit keys: splitmix64 of 1..n (Steele et al., OOPSLA
    2014). NOTE: not numpy.random, whose import costs 9 ms of every run's start-up."""
    x = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return np.where(x == 0, np.uint64(1), x)


def _check_reachable(fabric, ports, node_row, host_class, members, dist) -> None:
    """TopologyError naming the first (source, destination) host pair, in host order,
    with no path, and how many pairs have none."""
    n_classes = len(members)
    reach = np.zeros((n_classes, n_classes), dtype=bool)
    for j in range(members.shape[1]):
        m = members[:, j] >= 0
        rows = node_row[np.where(m, members[:, j], 0)]
        ok = m & (rows >= 0)
        reach[ok] |= dist[rows[ok]] != UNREACHED
    size = np.bincount(host_class, minlength=n_classes)
    bad = ~reach
    n_bad = int((size[:, None] * size[None, :] * bad).sum() - (size * np.diag(bad)).sum())
    if not n_bad:
        return
    host_node = np.asarray(fabric.hosts)
    for a in range(fabric.n_hosts):
        cb = np.nonzero(bad[host_class[a]])[0]
        others = np.nonzero(np.isin(host_class, cb) & (np.arange(fabric.n_hosts) != a))[0]
        if len(others):
            b = others[0]
            raise TopologyError(
                f"topology is disconnected: host {fabric.names[host_node[a]]} cannot reach host "
                f"{fabric.names[host_node[b]]} ({n_bad} unreachable pairs); check the links")


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


def clockwise_routes(fabric: Fabric, ports: PortTable) -> Routes:
    """Routes of a ring that always go clockwise (to the next switch), never the short way:
    every switch not linked to the destination has one next hop, its port to the next
    ring switch."""
    r = route(fabric, ports)
    kinds = np.asarray(fabric.kinds)
    peer_node = ports.node[ports.peer]
    n_ring = int((kinds == SWITCH).sum())
    switches = np.nonzero(kinds == SWITCH)[0]
    clockwise = np.zeros(len(switches), dtype=np.int32)
    for i, u in enumerate(switches):
        mine = np.arange(ports.first[u], ports.first[u] + ports.count[u])
        nxt = f"ring{(int(fabric.names[u][4:]) + 1) % n_ring}"
        clockwise[i] = next(p for p in mine if fabric.names[peer_node[p]] == nxt)
    table = np.full(len(r.table), -1, dtype=np.int32).reshape(-1, r.n_classes)
    rows = r.node_row[switches]
    table[rows] = np.arange(len(switches), dtype=np.int32)[:, None]
    linked = r.dist[rows] == 1              # the destination hangs off this switch
    table[rows] = np.where(linked, -1, table[rows])
    return Routes(r.node_row, r.host_class, r.n_classes, table.reshape(-1),
                  np.arange(len(switches) + 1, dtype=np.int32), clockwise, r.dist)


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
