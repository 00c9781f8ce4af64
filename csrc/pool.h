/* Memory for the packet pool: pages a packet first needs are the only ones touched, and a
 * pool that doubles keeps its pages where they are.
 *
 * On Linux the pool is an anonymous mapping: it grows with mremap (the kernel moves page
 * tables; nothing is copied, nothing already touched is zeroed again), and it asks for
 * transparent huge pages (madvise), since packets are read in no particular order and
 * 4 KiB pages would miss the TLB on most of them. Elsewhere: aligned malloc and a copy.
 * Returned memory is page aligned (at least 64 B aligned in the fallback) and zeroed on
 * Linux; callers initialise what they use. */
#ifndef ETHLINK_POOL_H
#define ETHLINK_POOL_H
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sys/mman.h>

static inline void* ethlink_pool_alloc(size_t bytes)
{
    void* p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);   /* a hint: without THP it changes nothing */
#endif
    return p;
}

/* The pool at `p` (old_bytes) grown to new_bytes, possibly moved; NULL (p untouched) when
 * memory runs out. */
static inline void* ethlink_pool_grow(void* p, size_t old_bytes, size_t new_bytes)
{
    void* q = mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE);
    if (q == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(q, new_bytes, MADV_HUGEPAGE);
#endif
    return q;
}

static inline void ethlink_pool_free(void* p, size_t bytes)
{
    if (p != NULL)
        munmap(p, bytes);
}

#else  /* no mremap: aligned malloc, copy on growth */

static inline void* ethlink_pool_alloc(size_t bytes)
{
    void* p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    return p;
}

static inline void* ethlink_pool_grow(void* p, size_t old_bytes, size_t new_bytes)
{
    void* q = ethlink_pool_alloc(new_bytes);
    if (q == NULL)
        return NULL;
    memcpy(q, p, old_bytes);
    free(p);
    return q;
}

static inline void ethlink_pool_free(void* p, size_t bytes)
{
    (void)bytes;
    free(p);
}
#endif
#endif
