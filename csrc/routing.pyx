# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# Routing search for ethlink.topology.route: the hop distance from every router to every
# destination class, and a name (hash) for each router's set of next hops per class.
#
# What it computes: per class, a breadth-first search over the switch graph from the
# class's switches (distance 1: they are linked to its hosts); a host with several ports
# is one hop more than its nearest switch. A router's next hops towards the class are
# its ports whose peer is a switch one hop closer; their set is named by the XOR of the
# ports' 64-bit keys (topology.route compares and expands the names).
#
# NOTE: this is ethlink.topology.route's search in C: O(classes x (routers + ports)),
# about 1 ns per (port, class) pair, where numpy took about 60 ns (70 s for a k=74
# fat-tree). It runs without the GIL.
#
# Limits: distances up to 32766 hops (int16).
cimport numpy as cnp
from libc.stdint cimport int16_t, int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, free

cnp.import_array()

DEF UNREACHED = 32767


def class_search(int32_t n_rows, int32_t[::1] adj_off, int32_t[::1] adj_row, int32_t[:, ::1] seeds,
                 int32_t[::1] host_rows, int32_t[::1] host_off, int32_t[::1] host_peer,
                 int32_t[::1] port_off, int32_t[::1] port_peer, uint64_t[::1] port_key,
                 int16_t[:, ::1] dist, uint64_t[:, ::1] hashes):
    """Fill dist[row, class] and hashes[row, class] (see the file's comment).

    adj_off/adj_row: CSR of switch rows -> neighbouring switch rows (one entry per link);
    seeds[class, j]: the class's switch rows, -1 padded; host_rows: rows of hosts with
    several ports, host_off/host_peer: CSR of their peer switch rows; port_off (n_rows + 1)
    /port_peer/port_key: each row's ports in port order, the peer's row (-1: not a switch)
    and the port's key."""
    cdef int32_t n_classes = dist.shape[1], c, j, i, u, v, r, head, tail, best
    cdef int16_t du
    cdef uint64_t h
    cdef int16_t* col = <int16_t*>malloc(max(n_rows, 1) * sizeof(int16_t))
    cdef int32_t* queue = <int32_t*>malloc(max(n_rows, 1) * sizeof(int32_t))
    if col == NULL or queue == NULL:
        free(col)
        free(queue)
        raise MemoryError()
    with nogil:
        for c in range(n_classes):
            for r in range(n_rows):
                col[r] = UNREACHED
            head = 0
            tail = 0
            for j in range(seeds.shape[1]):
                u = seeds[c, j]
                if u >= 0 and col[u] == UNREACHED:
                    col[u] = 1
                    queue[tail] = u
                    tail += 1
            while head < tail:
                u = queue[head]
                head += 1
                for i in range(adj_off[u], adj_off[u + 1]):
                    v = adj_row[i]
                    if col[v] == UNREACHED:
                        col[v] = col[u] + 1
                        queue[tail] = v
                        tail += 1
            for j in range(host_rows.shape[0]):
                best = UNREACHED
                for i in range(host_off[j], host_off[j + 1]):
                    if col[host_peer[i]] < best:
                        best = col[host_peer[i]]
                col[host_rows[j]] = best + 1 if best != UNREACHED else UNREACHED
            for r in range(n_rows):
                du = col[r]
                dist[r, c] = du
                h = 0
                if du != UNREACHED:
                    for i in range(port_off[r], port_off[r + 1]):
                        v = port_peer[i]
                        if v >= 0 and col[v] == du - 1:
                            h ^= port_key[i]
                hashes[r, c] = h
    free(col)
    free(queue)
