/* The event heap's sift loops: a 4-ary min-heap on (time, seq), in C so that the choice
 * among a node's children compiles to conditional moves, not branches.
 *
 * NOTE: the child a sift follows is data-dependent and unpredictable; as branches, the
 * comparisons cost about one misprediction per level (a quarter of the loop on the
 * 1024-host permutation). Here every level does the same work: two pairs of children are
 * compared, then the two winners, with set-on-condition results used as index offsets.
 * For that, a node's four child slots are always readable: every slot at or past the
 * heap's end holds a sentinel that compares greater than any event (ev_heap_clear), so
 * the capacity must stay at least 4 past the count (core.pxd schedule_seq grows it).
 *
 * Events pop in exactly (time, seq) order, as before: seq is unique, so no two events
 * compare equal and the order does not depend on how the heap is laid out. */
#ifndef ETHLINK_HEAP_H
#define ETHLINK_HEAP_H
#include <stdint.h>

typedef struct {
    int64_t time;   /* ps; events pop in (time, seq) order */
    int64_t seq;    /* insertion sequence number, unique */
    int32_t kind;   /* EventKind */
    int32_t obj;    /* port, flow, queue or timer-owner index (by kind) */
    int64_t arg;    /* packet index for arrivals, timer kind and generation for timers */
} Event;

#define EV_SENTINEL_TIME INT64_MAX

/* a < b in (time, seq) order; both are non-negative, so an unsigned 128-bit key orders them */
static inline int ev_lt(const Event* a, const Event* b)
{
    unsigned __int128 ka = ((unsigned __int128)(uint64_t)a->time << 64) | (uint64_t)a->seq;
    unsigned __int128 kb = ((unsigned __int128)(uint64_t)b->time << 64) | (uint64_t)b->seq;
    return ka < kb;
}

/* Fill slots [from, to) with sentinels. */
static inline void ev_heap_clear(Event* h, int64_t from, int64_t to)
{
    for (int64_t i = from; i < to; i++) {
        h[i].time = EV_SENTINEL_TIME;
        h[i].seq = INT64_MAX;
        h[i].kind = -1;
        h[i].obj = -1;
        h[i].arg = -1;
    }
}

/* Insert ev into a heap of n events (h[n] is a free slot, capacity >= n + 4). */
static inline void ev_heap_push(Event* h, int64_t n, const Event* ev)
{
    int64_t i = n, parent;
    while (i > 0) {
        parent = (i - 1) >> 2;
        if (!ev_lt(ev, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = *ev;
}

/* Remove h[0] from a heap of n + 1 events: afterwards h[0..n) is the heap and h[n] a
 * sentinel. The caller copies h[0] out first. */
static inline void ev_heap_pop(Event* h, int64_t n)
{
    Event last = h[n];
    int64_t i = 0, c, a, b, best;
    ev_heap_clear(h, n, n + 1);
    if (n == 0)
        return;
    while (1) {
        c = 4 * i + 1;
        if (c >= n)
            break;
        a = c + ev_lt(&h[c + 1], &h[c]);
        b = c + 2 + ev_lt(&h[c + 3], &h[c + 2]);
        best = ev_lt(&h[b], &h[a]) ? b : a;
        if (!ev_lt(&h[best], &last))
            break;
        h[i] = h[best];
        i = best;
    }
    h[i] = last;
}

#endif
