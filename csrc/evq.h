/* The engine's event queue: a calendar queue (a timing wheel of buckets 2^shift ps wide)
 * in front of 4-ary heaps (heap.h), popping events in exactly (time, seq) order.
 *
 * NOTE: a binary or 4-ary heap of every pending event costs a sift of log(n) levels per
 * pop, a quarter of the loop on the 1024-host permutation even with branch-free sifts.
 * Packet events land a serialization time or a link delay ahead of now, so a wheel whose
 * horizon covers the longest link takes almost every event in O(1). When the wheel
 * reaches a bucket, its events are sorted once into a run that then pops in order: in
 * synchronised traffic (every host starting together on equal links, the usual incast
 * and permutation) a bucket holds hundreds of events at the same few instants, and a
 * merge of the few ascending runs they were added in is far cheaper than a heap of them.
 * Events added to the bucket being served (or an earlier one) while it is served go to
 * a small heap beside the run, and events beyond the horizon (protocol timers) wait in a
 * second heap. The wheel is an optimisation only: events pop in the same order as from
 * one heap.
 *
 * Invariants (bucket(e) = e.time >> shift; B = the bucket being served):
 * - run[run_pos..run_n) (sorted) and cur (a heap) hold events with bucket <= B; the
 *   wheel's slot (b & mask) holds events of exactly one bucket b, B < b < B + nslots;
 *   far holds events of buckets > B (at least B + nslots when added). Hence the earlier
 *   of the run's next event and cur's root, when either exists, is the earliest event.
 * - B only advances when run and cur are empty, to the smallest bucket in the wheel or
 *   far, so no event is ever in a bucket before B, and the wheel's events stay within one
 *   window. */
#ifndef ETHLINK_EVQ_H
#define ETHLINK_EVQ_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "heap.h"

#define WALK_MIN_RUN 16
/* NOTE: the synchronised permutation's buckets hold hundreds of events (475 on average
 * in those that need sorting, at k=16) where quicksort's compares are coin flips for the
 * branch predictor; a radix sort has no branches on the keys. Below this many, a rank
 * sort or quicksort (the RoCE permutation's buckets of 16 to 64: radix no faster there). */
#define RADIX_MIN_RUN 64
/* NOTE: below RADIX_MIN_RUN, buckets are rank-sorted where the CPU has AVX2: each key's
 * place is the count of keys below it, compared 8 at a time, and the events are put
 * straight into their places. That is n^2 compares, but without a branch: in the RoCE
 * permutation (buckets of 27 events on average, in 6 ascending runs, 94 % needing a sort)
 * quicksort's compares were coin flips, about one mispredicted branch per event
 * (cachegrind's branch model), and the rank sort made the run 6 to 7 % faster. Elsewhere
 * (no AVX2, or not x86-64), and for keys wider than 31 bits (time and sequence numbers
 * far apart: none in the built-ins), such buckets are quicksorted; the order is the same. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EVQ_HAVE_RANK 1
#else
#define EVQ_HAVE_RANK 0
#endif

typedef struct {
    Event* run;         /* the bucket being served, sorted; run[run_pos] is next */
    Event* tmp;         /* sort buffer of the run's capacity */
    uint64_t* keys;     /* sort keys: twice the run's capacity (the radix sort's buffer) */
    int64_t run_pos, run_n, run_cap;
    Event* cur;         /* events added to buckets <= bucket while it is served: a 4-ary
                           heap with sentinels */
    int64_t cur_n, cur_cap;
    Event* far;         /* events beyond the wheel's horizon when added: a 4-ary heap */
    int64_t far_n, far_cap;
    int64_t bucket;     /* the bucket being served */
    int shift;          /* bucket width: 2^shift ps */
    int64_t nslots;     /* wheel slots, a power of 2 */
    int32_t* head;      /* per slot: its first node (the latest added), -1 empty */
    int32_t* cnt;       /* per slot: its node count */
    uint64_t* bits;     /* per slot: 1 when not empty */
    int64_t wheel_n;    /* events in the wheel */
    Event* nev;         /* wheel nodes: their events, and apart, their links: the next node
                           in the same slot (-1 ends), or the next free one.
                           NOTE: apart, gathering a bucket chases the small link array
                           (4 B a node, mostly in cache) and the events' loads, no longer
                           on the chase, overlap; a 32 B event never straddles two lines */
    int32_t* nnext;
    int64_t node_cap, node_top;
    int32_t node_free;
    int32_t walk;       /* the next wheel bucket's node to fetch ahead (evq_pop), -1 none */
    int rank;           /* 1: buckets below RADIX_MIN_RUN are rank-sorted (evq_sort_run);
                           set by evq_init where the CPU can (evq_rank_supported) */
    int64_t n;          /* events in all */
    int64_t cap_hwm;    /* most events held at once (a counter for the benchmarks) */
} EvQueue;

/* 1 if this CPU can rank-sort (AVX2 on x86-64), else 0. */
static inline int evq_rank_supported(void)
{
#if EVQ_HAVE_RANK
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

static inline int evq_heap_grow(Event** h, int64_t* cap)
{
    Event* g = (Event*)realloc(*h, 2 * (*cap) * sizeof(Event));
    if (g == NULL)
        return -1;
    ev_heap_clear(g, *cap, 2 * (*cap));
    *h = g;
    *cap *= 2;
    return 0;
}

static inline void evq_free(EvQueue* q)
{
    free(q->run);
    free(q->tmp);
    free(q->keys);
    q->keys = NULL;
    free(q->cur);
    free(q->far);
    free(q->head);
    free(q->cnt);
    free(q->bits);
    free(q->nev);
    free(q->nnext);
    q->run = q->tmp = q->cur = q->far = NULL;
    q->head = NULL;
    q->cnt = NULL;
    q->bits = NULL;
    q->nev = NULL;
    q->nnext = NULL;
}

/* shift: bucket width 2^shift ps; nslots: a power of 2, at least 64. 0, or -1 (no memory). */
static inline int evq_init(EvQueue* q, int shift, int64_t nslots)
{
    int64_t i;
    q->shift = shift;
    q->nslots = nslots;
    q->bucket = 0;
    q->cur_n = q->far_n = q->wheel_n = q->n = q->cap_hwm = 0;
    q->cur_cap = q->far_cap = q->run_cap = 64;
    q->run_pos = q->run_n = 0;
    q->node_cap = 1024;
    q->node_top = 0;
    q->node_free = -1;
    q->walk = -1;
    q->rank = evq_rank_supported();
    q->run = (Event*)malloc(q->run_cap * sizeof(Event));
    q->tmp = (Event*)malloc(q->run_cap * sizeof(Event));
    q->keys = (uint64_t*)malloc(2 * q->run_cap * sizeof(uint64_t));
    q->cur = (Event*)malloc(q->cur_cap * sizeof(Event));
    q->far = (Event*)malloc(q->far_cap * sizeof(Event));
    q->head = (int32_t*)malloc(nslots * sizeof(int32_t));
    q->cnt = (int32_t*)calloc(nslots, sizeof(int32_t));
    q->bits = (uint64_t*)calloc(nslots / 64, sizeof(uint64_t));
    q->nev = (Event*)malloc(q->node_cap * sizeof(Event));
    q->nnext = (int32_t*)malloc(q->node_cap * sizeof(int32_t));
    if (!q->run || !q->tmp || !q->keys || !q->cur || !q->far || !q->head || !q->cnt || !q->bits || !q->nev || !q->nnext) {
        evq_free(q);
        return -1;
    }
    ev_heap_clear(q->cur, 0, q->cur_cap);
    ev_heap_clear(q->far, 0, q->far_cap);
    for (i = 0; i < nslots; i++)
        q->head[i] = -1;
    return 0;
}

static inline int evq_cur_push(EvQueue* q, const Event* ev)
{
    if (q->cur_n + 4 >= q->cur_cap && evq_heap_grow(&q->cur, &q->cur_cap))
        return -1;
    ev_heap_push(q->cur, q->cur_n, ev);
    q->cur_n++;
    return 0;
}

/* Chain wheel node ni (its event written) into its slot. */
static inline void evq_slot_add(EvQueue* q, int64_t slot, int32_t ni)
{
    q->nnext[ni] = q->head[slot];
    q->head[slot] = ni;
    q->cnt[slot]++;
    q->bits[slot >> 6] |= (uint64_t)1 << (slot & 63);
    q->wheel_n++;
}

/* One more event held. */
static inline void evq_count(EvQueue* q)
{
    q->n++;
    if (q->n > q->cap_hwm)
        q->cap_hwm = q->n;
}

/* Add an event (time >= the time of the last event popped). 0, or -1 (no memory). */
static __attribute__((noinline)) int evq_push(EvQueue* q, const Event* ev)
{
    int64_t b = ev->time >> q->shift;
    int32_t ni, *nn;
    Event* ne;
    if (b <= q->bucket) {
        if (evq_cur_push(q, ev))
            return -1;
    } else if (b - q->bucket < q->nslots) {     /* (no overflow near INT64_MAX) */
        if (q->node_free >= 0) {
            ni = q->node_free;
            q->node_free = q->nnext[ni];
        } else {
            if (q->node_top == q->node_cap) {
                if (q->node_cap >= ((int64_t)1 << 30))
                    return -1;
                ne = (Event*)realloc(q->nev, 2 * q->node_cap * sizeof(Event));
                if (ne == NULL)
                    return -1;
                q->nev = ne;
                nn = (int32_t*)realloc(q->nnext, 2 * q->node_cap * sizeof(int32_t));
                if (nn == NULL)
                    return -1;
                q->nnext = nn;
                q->node_cap *= 2;
            }
            ni = (int32_t)q->node_top++;
        }
        q->nev[ni] = *ev;
        evq_slot_add(q, b & (q->nslots - 1), ni);
    } else {
        if (q->far_n + 4 >= q->far_cap && evq_heap_grow(&q->far, &q->far_cap))
            return -1;
        ev_heap_push(q->far, q->far_n, ev);
        q->far_n++;
    }
    evq_count(q);
    return 0;
}

/* evq_push of the event (time, seq, kind, obj, arg).
 * NOTE: the engine's callers used to fill an Event on the stack field by field for
 * evq_push to copy with 16-byte loads, which store forwarding cannot serve from the
 * narrower stores: the copy waited for the stores to reach the cache (perf put three
 * quarters of evq_push's samples there). The common case (a wheel event, a freed node
 * at hand) writes the fields into the node directly, inline. */
static inline int evq_push5(EvQueue* q, int64_t time, int64_t seq, int32_t kind, int32_t obj, int64_t arg)
{
    int64_t b = time >> q->shift;
    int32_t ni = q->node_free;
    Event* e;
    Event ev;
    if (__builtin_expect(b > q->bucket && b - q->bucket < q->nslots && ni >= 0, 1)) {
        q->node_free = q->nnext[ni];
        e = &q->nev[ni];
        e->time = time;
        e->seq = seq;
        e->kind = kind;
        e->obj = obj;
        e->arg = arg;
        evq_slot_add(q, b & (q->nslots - 1), ni);
        evq_count(q);
        return 0;
    }
    ev.time = time;
    ev.seq = seq;
    ev.kind = kind;
    ev.obj = obj;
    ev.arg = arg;
    return evq_push(q, &ev);
}

/* The smallest bucket after q->bucket that holds a wheel event (wheel_n > 0). */
static inline int64_t evq_next_wheel_bucket(const EvQueue* q)
{
    int64_t mask = q->nslots - 1, nwords = q->nslots >> 6;
    int64_t start = (q->bucket + 1) & mask, i = start >> 6, k;
    uint64_t w = q->bits[i] & (~(uint64_t)0 << (start & 63));
    for (k = 0; k <= nwords; k++) {
        if (w) {
            int64_t slot = (i << 6) + __builtin_ctzll(w);
            return q->bucket + 1 + ((slot - start) & mask);
        }
        i = (i + 1) & (nwords - 1);
        w = q->bits[i];
    }
    return INT64_MAX;   /* not reached while wheel_n > 0 */
}

/* Sort a[0..n) into (time, seq) order: a natural merge sort (tmp holds n events), for
 * the rare bucket whose packed keys do not fit in 64 bits (evq_sort_run). */
static inline void ev_sort(Event* a, Event* tmp, int64_t n)
{
    Event *src = a, *dst = tmp, *t;
    int64_t i, j, k, e, m, runs;
    while (1) {
        runs = 0;
        for (i = 0; i < n; i = k) {
            j = i + 1;
            while (j < n && !ev_lt(&src[j], &src[j - 1]))
                j++;
            if (i == 0 && j >= n)
                goto done;      /* one ascending run: sorted, in src */
            k = j;
            if (j < n) {
                k = j + 1;
                while (k < n && !ev_lt(&src[k], &src[k - 1]))
                    k++;
            }
            m = i;
            e = j;              /* merge [i, e) and [j, k) */
            while (i < e && j < k)
                dst[m++] = ev_lt(&src[j], &src[i]) ? src[j++] : src[i++];
            while (i < e)
                dst[m++] = src[i++];
            while (j < k)
                dst[m++] = src[j++];
            runs++;
        }
        t = src;
        src = dst;
        dst = t;
        if (runs <= 1)
            break;
    }
done:
    if (src != a)
        memcpy(a, src, n * sizeof(Event));
}

static inline void u64_sort(uint64_t* a, int64_t n)
{
    /* quicksort (median of three, the smaller side first by recursion) over insertion
       sort for short ranges; keys are distinct */
    uint64_t p, t;
    int64_t i, j;
    while (n > 16) {
        i = n >> 1;
        if (a[i] < a[0]) { t = a[i]; a[i] = a[0]; a[0] = t; }
        if (a[n - 1] < a[0]) { t = a[n - 1]; a[n - 1] = a[0]; a[0] = t; }
        if (a[n - 1] < a[i]) { t = a[n - 1]; a[n - 1] = a[i]; a[i] = t; }
        p = a[i];
        i = -1;
        j = n;
        while (1) {
            do i++; while (a[i] < p);
            do j--; while (a[j] > p);
            if (i >= j)
                break;
            t = a[i]; a[i] = a[j]; a[j] = t;
        }
        j++;                                /* [0, j) <= p <= [j, n) */
        if (j < n - j) {
            u64_sort(a, j);
            a += j;
            n -= j;
        } else {
            u64_sort(a + j, n - j);
            n = j;
        }
    }
    for (i = 1; i < n; i++) {
        t = a[i];
        for (j = i; j > 0 && a[j - 1] > t; j--)
            a[j] = a[j - 1];
        a[j] = t;
    }
}

/* Sort a[0..n) by bits [lo, hi) of the keys, stably: LSD radix, 8-bit digits, every
 * digit's histogram counted in one pass; tmp holds n keys. */
static inline void u64_radix_sort(uint64_t* a, uint64_t* tmp, int64_t n, int lo, int hi)
{
    uint32_t cnt[8][256], sum, c;
    int d, b, nd = (hi - lo + 7) >> 3;
    int64_t i;
    uint64_t v, *src = a, *dst = tmp, *t;
    memset(cnt, 0, nd * sizeof(cnt[0]));
    for (i = 0; i < n; i++) {
        v = a[i] >> lo;
        for (d = 0; d < nd; d++)
            cnt[d][(v >> (8 * d)) & 255]++;
    }
    for (d = 0; d < nd; d++) {
        for (b = 0, sum = 0; b < 256; b++) {
            c = cnt[d][b];
            cnt[d][b] = sum;
            sum += c;
        }
        for (i = 0; i < n; i++)
            dst[cnt[d][(src[i] >> (lo + 8 * d)) & 255]++] = src[i];
        t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof(uint64_t));
}

#if EVQ_HAVE_RANK
/* rank[i] = how many of k[0..n) are below k[i]. The keys are distinct and below 2^31, and
 * k is padded with INT32_MAX to a multiple of 8. */
__attribute__((target("avx2"))) static void u32_rank(const uint32_t* k, int64_t n, int32_t* rank)
{
    int64_t i, j, n8 = (n + 7) & ~(int64_t)7;
    __m256i ki, acc;
    __m128i s;
    for (i = 0; i < n; i++) {
        ki = _mm256_set1_epi32((int)k[i]);
        acc = _mm256_setzero_si256();
        for (j = 0; j < n8; j += 8)     /* each lane: minus the count of keys below */
            acc = _mm256_add_epi32(acc, _mm256_cmpgt_epi32(ki, _mm256_loadu_si256((const __m256i*)(k + j))));
        s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
        rank[i] = -_mm_cvtsi128_si32(s);
    }
}

/* Sort the run's n (2 to RADIX_MIN_RUN - 1) events into o by rank: 32-bit keys of
 * tb + sb <= 31 bits (time above the bucket's first, then seq above its smallest). */
static void evq_rank_sort(EvQueue* q, int64_t n, int64_t t0, int64_t s0, int sb)
{
    int32_t rank[RADIX_MIN_RUN];
    uint32_t* k = (uint32_t*)q->keys;
    Event *a = q->run, *o = q->tmp;
    int64_t i;
    for (i = 0; i < n; i++)
        k[i] = ((uint32_t)(a[i].time - t0) << sb) | (uint32_t)(a[i].seq - s0);
    for (; i & 7; i++)
        k[i] = (uint32_t)INT32_MAX;
    u32_rank(k, n, rank);
    for (i = 0; i < n; i++)
        o[rank[i]] = a[i];
    q->run = o;
    q->tmp = a;
}
#endif

static inline int bitlen64(uint64_t x)
{
    return x ? 64 - __builtin_clzll(x) : 0;
}

/* Sort the run (run_n events of bucket <= B) into (time, seq) order.
 * NOTE: a bucket of synchronised traffic holds a hundred or more events added in no
 * useful order; each event's (time, seq) is packed with its index into one 64-bit key
 * (time within the bucket, seq above the bucket's smallest, index), the keys are sorted
 * as integers (radix sort for large buckets, else quicksort) and the events gathered in
 * that order; below RADIX_MIN_RUN, where the CPU can, the events are placed by rank
 * instead (evq_rank_sort). A bucket whose keys would not fit in 64 bits (sequence numbers
 * far apart) is merge-sorted instead. */
static inline void evq_sort_run(EvQueue* q)
{
    int64_t n = q->run_n, i;
    int64_t t0, t1, s0, s1;
    int tb, sb, ib, unsorted = 0;
    uint64_t* k = q->keys;
    Event *a = q->run, *o = q->tmp;
    if (n < 2)
        return;
    t0 = t1 = a[0].time;
    s0 = s1 = a[0].seq;
    for (i = 1; i < n; i++) {
        unsorted |= ev_lt(&a[i], &a[i - 1]);
        if (a[i].time < t0) t0 = a[i].time;
        if (a[i].time > t1) t1 = a[i].time;
        if (a[i].seq < s0) s0 = a[i].seq;
        if (a[i].seq > s1) s1 = a[i].seq;
    }
    if (!unsorted)
        return;
    tb = bitlen64((uint64_t)(t1 - t0));
    sb = bitlen64((uint64_t)(s1 - s0));
    ib = bitlen64((uint64_t)(n - 1));
    if (tb + sb + ib > 64) {
        ev_sort(a, o, n);
        return;
    }
#if EVQ_HAVE_RANK
    if (n < RADIX_MIN_RUN && q->rank && tb + sb <= 31) {
        evq_rank_sort(q, n, t0, s0, sb);
        return;
    }
#endif
    for (i = 0; i < n; i++)
        k[i] = ((((uint64_t)(a[i].time - t0) << sb) | (uint64_t)(a[i].seq - s0)) << ib) | (uint64_t)i;
    if (n >= RADIX_MIN_RUN)     /* (the index bits only break ties there are none of) */
        u64_radix_sort(k, k + q->run_cap, n, ib, tb + sb + ib);
    else
        u64_sort(k, n);
    for (i = 0; i < n; i++)
        o[i] = a[k[i] & (((uint64_t)1 << ib) - 1)];
    q->run = o;
    q->tmp = a;
}

/* Room in the run (and its sort buffers) for at least `n` events. 0, or -1 (no memory). */
static inline int evq_run_room(EvQueue* q, int64_t n)
{
    Event *r, *t;
    uint64_t* k;
    int64_t cap = q->run_cap;
    if (n <= cap)
        return 0;
    while (cap < n)
        cap *= 2;
    r = (Event*)realloc(q->run, cap * sizeof(Event));
    if (r == NULL)
        return -1;
    q->run = r;
    t = (Event*)realloc(q->tmp, cap * sizeof(Event));
    if (t == NULL)
        return -1;
    q->tmp = t;
    k = (uint64_t*)realloc(q->keys, 2 * cap * sizeof(uint64_t));
    if (k == NULL)
        return -1;
    q->keys = k;
    q->run_cap = cap;
    return 0;
}

/* run and cur are empty: serve the next bucket that holds events. 0 if there is none,
 * -1 (no memory), 1 otherwise. */
static inline int evq_advance(EvQueue* q)
{
    int64_t nb = INT64_MAX, fb, slot, k;
    int32_t ni, nx;
    if (q->n == 0)
        return 0;
    if (q->wheel_n > 0)
        nb = evq_next_wheel_bucket(q);
    if (q->far_n > 0) {
        fb = q->far[0].time >> q->shift;
        if (fb < nb)
            nb = fb;
    }
    q->bucket = nb;
    q->run_pos = q->run_n = 0;
    slot = nb & (q->nslots - 1);
    if (q->bits[slot >> 6] & ((uint64_t)1 << (slot & 63))) {
        /* the slot's events are all of bucket nb (see the invariants); its chain runs
           from the latest added back, so it is laid out from the run's end: events added
           in sequence order then need no sort (evq_sort_run) */
        k = q->cnt[slot];
        if (evq_run_room(q, k + 1))
            return -1;
        q->run_n = k;
        ni = q->head[slot];
        while (ni >= 0) {
            nx = q->nnext[ni];
            q->run[--k] = q->nev[ni];
            q->nnext[ni] = q->node_free;
            q->node_free = ni;
            ni = nx;
        }
        q->wheel_n -= q->run_n;
        q->head[slot] = -1;
        q->cnt[slot] = 0;
        q->bits[slot >> 6] &= ~((uint64_t)1 << (slot & 63));
    }
    while (q->far_n > 0 && (q->far[0].time >> q->shift) == nb) {
        if (evq_run_room(q, q->run_n + 1))
            return -1;
        q->run[q->run_n++] = q->far[0];
        q->far_n--;
        ev_heap_pop(q->far, q->far_n);
    }
    evq_sort_run(q);
    /* NOTE: gathering a bucket walks its slot's chain, a cache miss per node whose address
     * only the node before gives: the next bucket's chain is fetched one node per pop of
     * this one (evq_pop), so that its gathering finds the nodes in cache. Only behind a
     * bucket of many events: with few, the walk has no time to run ahead, and finding the
     * next bucket twice costs more than it saves (the small incasts: 4 % slower). */
    q->walk = -1;
    if (q->wheel_n > 0 && q->run_n >= WALK_MIN_RUN) {
        q->walk = q->head[evq_next_wheel_bucket(q) & (q->nslots - 1)];
        if (q->walk >= 0)
            __builtin_prefetch(&q->nev[q->walk]);
    }
    return 1;
}

/* evq_top when the run is used up: cur's root, or the next bucket's first event. */
static __attribute__((noinline)) Event* evq_top_slow(EvQueue* q, int* err)
{
    int r;
    if (q->cur_n > 0)
        return &q->cur[0];
    r = evq_advance(q);
    if (r <= 0) {
        if (r < 0)
            *err = 1;
        return NULL;
    }
    if (q->cur_n > 0 && ev_lt(&q->cur[0], &q->run[q->run_pos]))
        return &q->cur[0];
    return &q->run[q->run_pos];
}

/* The earliest event, or NULL when there is none (or memory ran out: *err is set).
 * NOTE: called twice per event (engine.pyx run_loop), so only the common case is inline;
 * as one function, gcc kept it out of line and its register saves were a sixth of the
 * queue's instructions. */
static inline Event* evq_top(EvQueue* q, int* err)
{
    if (__builtin_expect(q->run_pos < q->run_n, 1)) {
        if (q->cur_n > 0 && ev_lt(&q->cur[0], &q->run[q->run_pos]))
            return &q->cur[0];
        return &q->run[q->run_pos];
    }
    return evq_top_slow(q, err);
}

/* The event k places after the run's next one, or NULL past the run's end (events in cur
 * may come before it: a hint for prefetching only). */
static inline const Event* evq_ahead(const EvQueue* q, int64_t k)
{
    return q->run_pos + k < q->run_n ? &q->run[q->run_pos + k] : NULL;
}

/* Remove the earliest event into *out; evq_top must have returned it. */
static inline void evq_pop(EvQueue* q, Event* out)
{
    if (q->run_pos < q->run_n && (q->cur_n == 0 || !ev_lt(&q->cur[0], &q->run[q->run_pos]))) {
        *out = q->run[q->run_pos++];
        if (q->walk >= 0) {
            q->walk = q->nnext[q->walk];
            if (q->walk >= 0)
                __builtin_prefetch(&q->nev[q->walk]);
        }
    } else {
        *out = q->cur[0];
        q->cur_n--;
        ev_heap_pop(q->cur, q->cur_n);
    }
    q->n--;
}

#endif
