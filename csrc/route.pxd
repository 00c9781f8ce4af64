# Routing lookups: the equal-cost next hops at a node towards a destination host.
#
# What it models: the forwarding tables of ethlink.topology.Routes. Hosts linked to the
# same switches form one destination class. At a node linked to the destination host,
# the next hops are its links to that host (its table entry for the class is -1); at a
# host with one port, that port; at any other router (a switch, or a host with several
# ports), the set of ports stored for (router, class): table[node_row[node] * n_classes +
# host_class[dst]] indexes route_off/route_port. Candidates are in ascending port order, as the dense
# (node x host) table they replace listed them, so ECMP hashes pick the same port.
#
# Limits: a node linked to the destination by several links scans the host's ports
# (a handful) to find the k-th.
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


cdef inline int32_t route_count(Sim* s, int32_t node, int32_t dst, int32_t* first) noexcept nogil:
    # Number of next hops at `node` towards host `dst` (0: none); *first = the first one.
    # NOTE: the table first (one lookup for most hops); a router linked to the
    # destination has no set for its class (-1) and scans the host's few ports.
    cdef int32_t row = s.node_row[node], sid
    if row < 0:                         # a host with one port: every route leaves by it
        first[0] = s.nodes[node].first_port
        return 1
    sid = s.route_set[<int64_t>row * s.n_classes + s.host_class[dst]]
    if sid >= 0:
        first[0] = s.route_port[s.route_off[sid]]
        return s.route_off[sid + 1] - s.route_off[sid]
    return linked_count(s, node, dst, 0, first)


cdef inline int32_t route_nth(Sim* s, int32_t node, int32_t dst, int32_t k) noexcept nogil:
    # The k-th next hop (0 <= k < route_count) at `node` towards host `dst`.
    cdef int32_t row = s.node_row[node], sid, nth = -1
    if row < 0:
        return s.nodes[node].first_port
    sid = s.route_set[<int64_t>row * s.n_classes + s.host_class[dst]]
    if sid >= 0:
        return s.route_port[s.route_off[sid] + k]
    linked_count(s, node, dst, k, &nth)
    return nth
