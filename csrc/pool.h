/* Memory for the packet pool: pages a packet first needs are the only ones touched, and a
 * pool that doubles keeps its pages where they are.
 *
 * On Linux the pool is an anonymous mapping that asks for transparent huge pages
 * (madvise), since packets are read in no particular order and 4 KiB pages would miss the
 * TLB on most of them. Where the kernel grants it, the address space of the largest pool
 * (2^30 packets) is reserved up front (MAP_NORESERVE: nothing is committed or touched),
 * so the pool grows in place; else it grows with mremap (the kernel moves page tables;
 * nothing is copied, nothing already touched is zeroed again). Elsewhere: aligned malloc
 * and a copy. Returned memory is page aligned (at least 64 B aligned in the fallback) and
 * zeroed on Linux; callers initialise what they use.
 *
 * NOTE: the kernel zeroes a page when the engine first writes it, a 2 MiB huge page at a
 * time: 4 % of the 1024-host permutation's engine (perf: clear_page_erms under
 * pkt_alloc). In a reserved pool a helper thread faults the pages in ahead of the
 * engine's never-used records (ethlink_pool_populate, MADV_POPULATE_WRITE, Linux 5.14),
 * on the machine's other core while the engine runs; it changes no byte the engine sees,
 * only when the zeroing happens. Without the reservation, the madvise flag or a thread,
 * the engine faults its pages in itself, as before. The first ETHLINK_POOL_SMALL bytes
 * (16384 packets) are the engine's own to fault in, and only a run whose records pass
 * half of them starts the helper: a small run has no thread and no page it did not
 * touch. Its resident memory is still a 2 MiB huge page at least where the kernel aligns
 * the reservation for them (Linux 6.18 here does); a plain mapping of a small pool got small pages, slower on a large
 * run's hottest records (the 1024-host permutation's median 6 % slower with its first
 * 2 MiB in small pages; benchmarks/README.md, "Memory per in-flight packet"). */
#ifndef ETHLINK_POOL_H
#define ETHLINK_POOL_H
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE                     /* mremap, pthread_setname_np: before any header */
#endif
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23          /* Linux 5.14; older kernels answer EINVAL */
#endif

#define ETHLINK_POOL_CHUNK ((size_t)2 << 20)    /* one huge page per madvise call */
#define ETHLINK_POOL_SMALL ((size_t)2 << 20)    /* the helper faults pages in from here on */

/* A reserved pool and its helper thread. The helper populates [done, want) in chunks,
 * from ETHLINK_POOL_SMALL on; the engine raises `want` (ethlink_pool_populate). mu guards
 * done, want, stop, thread_on and failed; the helper drops it around each madvise. */
typedef struct {
    char* base;
    size_t reserved;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t done, want;
    int stop, thread_on, failed;
    pid_t pid;                          /* the creating process: a fork's child never uses the helper */
} EthlinkPool;

static void* ethlink_pool_helper(void* arg)
{
    EthlinkPool* f = (EthlinkPool*)arg;
    size_t from, to;
    int r;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (!f->stop && f->done >= f->want)
            pthread_cond_wait(&f->cv, &f->mu);
        if (f->stop)
            break;
        from = f->done;
        to = f->want - from > ETHLINK_POOL_CHUNK ? from + ETHLINK_POOL_CHUNK : f->want;
        pthread_mutex_unlock(&f->mu);
        r = madvise(f->base + from, to - from, MADV_POPULATE_WRITE);
        pthread_mutex_lock(&f->mu);
        if (r != 0) {                   /* an older kernel, or memory ran out: the engine's own faults */
            f->failed = 1;
            break;
        }
        f->done = to;
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* A pool of `bytes`, growable to `max_bytes`; *pool is its reservation (or NULL when the
 * pool is a plain mapping). NULL when memory runs out. */
static inline void* ethlink_pool_alloc(size_t bytes, size_t max_bytes, void** pool)
{
    void* p;
    EthlinkPool* f;
    *pool = NULL;
    p = mmap(NULL, max_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
        f = (EthlinkPool*)calloc(1, sizeof(EthlinkPool));
        if (f != NULL && pthread_mutex_init(&f->mu, NULL) == 0) {
            if (pthread_cond_init(&f->cv, NULL) == 0) {
#ifdef MADV_HUGEPAGE
                madvise(p, max_bytes, MADV_HUGEPAGE);
#endif
                f->base = (char*)p;
                f->reserved = max_bytes;
                f->done = f->want = ETHLINK_POOL_SMALL;
                f->pid = getpid();
                *pool = f;
                return p;
            }
            pthread_mutex_destroy(&f->mu);
        }
        free(f);
        munmap(p, max_bytes);
    }
    /* no reservation (strict overcommit, an address-space limit): the pool's size only */
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);   /* a hint: without THP it changes nothing */
#endif
    return p;
}

/* The pool at `p` (old_bytes) grown to new_bytes, possibly moved; NULL (p untouched) when
 * memory runs out. */
static inline void* ethlink_pool_grow(void* p, size_t old_bytes, size_t new_bytes, void* pool)
{
    void* q;
    if (pool != NULL)
        return new_bytes <= ((EthlinkPool*)pool)->reserved ? p : NULL;
    q = mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE);
    if (q == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(q, new_bytes, MADV_HUGEPAGE);
#endif
    return q;
}

/* Ask the helper to have the pool's first `upto` bytes faulted in, from
 * ETHLINK_POOL_SMALL on (a reserved pool only; the helper starts on the first call, with
 * every signal blocked: a Ctrl-C or SIGTERM goes to Python's threads, as without it). */
static inline void ethlink_pool_populate(void* pool, size_t upto)
{
    EthlinkPool* f = (EthlinkPool*)pool;
    if (f == NULL || f->pid != getpid())
        return;
    if (upto > f->reserved)
        upto = f->reserved;
    sigset_t all, old;
    pthread_mutex_lock(&f->mu);
    if (upto > f->want && !f->failed) {
        f->want = upto;
        if (!f->thread_on) {
            sigfillset(&all);
            pthread_sigmask(SIG_BLOCK, &all, &old);
            if (pthread_create(&f->th, NULL, ethlink_pool_helper, f) == 0) {
                f->thread_on = 1;
                pthread_setname_np(f->th, "ethlink-pool");  /* as top, perf and gdb show it */
            } else
                f->failed = 1;
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        } else {
            pthread_cond_signal(&f->cv);
        }
    }
    pthread_mutex_unlock(&f->mu);
}

static inline void ethlink_pool_free(void* p, size_t bytes, void* pool)
{
    EthlinkPool* f = (EthlinkPool*)pool;
    if (f != NULL) {
        if (f->pid == getpid() && f->thread_on) {
            pthread_mutex_lock(&f->mu);
            f->stop = 1;
            pthread_cond_signal(&f->cv);
            pthread_mutex_unlock(&f->mu);
            pthread_join(f->th, NULL);  /* waits out one chunk at most */
        }
        if (f->pid == getpid()) {
            pthread_cond_destroy(&f->cv);
            pthread_mutex_destroy(&f->mu);
        }
        munmap(f->base, f->reserved);
        free(f);
    } else if (p != NULL) {
        munmap(p, bytes);
    }
}

#else  /* no mremap: aligned malloc, copy on growth */

static inline void* ethlink_pool_alloc(size_t bytes, size_t max_bytes, void** pool)
{
    void* p = NULL;
    (void)max_bytes;
    *pool = NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    return p;
}

static inline void* ethlink_pool_grow(void* p, size_t old_bytes, size_t new_bytes, void* pool)
{
    void* q = ethlink_pool_alloc(new_bytes, new_bytes, &pool);
    if (q == NULL)
        return NULL;
    memcpy(q, p, old_bytes);
    free(p);
    return q;
}

static inline void ethlink_pool_populate(void* pool, size_t upto)
{
    (void)pool;
    (void)upto;
}

static inline void ethlink_pool_free(void* p, size_t bytes, void* pool)
{
    (void)bytes;
    (void)pool;
    free(p);
}
#endif
#endif
