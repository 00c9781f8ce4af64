# Routing lookups: the equal-cost next hops at a node towards a destination host.
#
# What it models: the forwarding tables of ethlink.topology.Routes. Hosts linked to the
# same switches form one destination class. At a node linked to the destination host,
# the next hops are its links to that host (its table entry for the class is -1); at a
# host with one port, that port; at any other router (a switch, or a host with several
# ports), the set of ports stored for (router, class): table[node_row[node] * n_classes +
# host_class[dst]] indexes route_off/route_port. One lookup (route_hops) serves a routing
# decision: the count, the first hop and the k-th. Candidates are in ascending port order, as the dense
# (node x host) table they replace listed them, so ECMP hashes pick the same port.
#
# Limits: a node linked to a destination host with several ports scans the host's ports
# (a handful) to find its links to it (a host with one port: Sim.host_down).
from core cimport *


cdef inline int32_t linked_count(Sim* s, int32_t node, int32_t dst, int32_t k, int32_t* nth) noexcept nogil:
    # Links from `node` to host `dst`: their number; *nth = the k-th (if there is one).
    cdef int32_t hn = s.host_node[dst]
    cdef int32_t p = s.nodes[hn].first_port, end = p + s.nodes[hn].nports
    cdef int32_t pp, n = 0
    for p in range(p, end):
        pp = s.ports[p].peer
        if s.ports[pp].node == node:
            if n == k:
                nth[0] = pp
            n += 1
    return n


cdef struct Hops:               # the next hops at a node towards a destination, looked up once
    int32_t n                   # how many (0: none)
    int32_t first               # the first one
    const int32_t* ports        # all n in order, from the table; NULL when `node` is linked to
                                # the destination (then route_nth scans its links)


cdef inline Hops route_hops(Sim* s, int32_t node, int32_t dst) noexcept nogil:
    # NOTE: the table first (one lookup for most hops); a router linked to the
    # destination has no set for its class (-1) and scans the host's few ports.
    cdef Hops h
    cdef int32_t row = s.node_row[node], sid
    h.ports = NULL
    if row < 0:                         # a host with one port: every route leaves by it
        h.first = s.nodes[node].first_port
        h.n = 1
        return h
    if s.host_down[2 * dst] == node:
        # NOTE: the last switch before a host with one port (a sixth of a fat-tree's hops):
        # its one link to it, from a small table, where the scan below reads the host's
        # node and port records and the switch port's (three cache misses on large fabrics)
        h.first = s.host_down[2 * dst + 1]
        h.n = 1
        return h
    if s.route_set16 != NULL:
        sid = s.route_set16[<int64_t>row * s.n_classes + s.host_class[dst]]
    else:
        sid = s.route_set[<int64_t>row * s.n_classes + s.host_class[dst]]
    if sid >= 0:
        h.ports = &s.route_port[s.route_off[sid]]
        h.first = h.ports[0]
        h.n = s.route_off[sid + 1] - s.route_off[sid]
        return h
    h.first = -1
    h.n = linked_count(s, node, dst, 0, &h.first)
    return h


cdef inline int32_t route_nth(Sim* s, Hops* h, int32_t node, int32_t dst, int32_t k) noexcept nogil:
    # The k-th (0 <= k < h.n) of the next hops `h` at `node` towards host `dst`.
    cdef int32_t nth = -1
    if h.ports != NULL:
        return h.ports[k]
    if k == 0:
        return h.first
    linked_count(s, node, dst, k, &nth)
    return nth


cdef inline int32_t route_spray(Sim* s, int32_t node, int32_t dst, int32_t k) noexcept nogil:
    # The (k mod n)-th next hop: spraying frame k over the equal-cost next hops.
    cdef Hops h = route_hops(s, node, dst)
    return route_nth(s, &h, node, dst, k % h.n)
