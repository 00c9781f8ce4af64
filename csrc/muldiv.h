/* Exact ceil(a * b / c) for non-negative int64 operands whose product overflows int64
 * (pause times: 65535 quanta x 512 bits x 1e12 ps/s). gcc and clang provide __int128. */
#ifndef ETHLINK_MULDIV_H
#define ETHLINK_MULDIV_H
#include <stdint.h>

static inline int64_t ethlink_mul_div_ceil(int64_t a, int64_t b, int64_t c)
{
    __int128 n = (__int128)a * (__int128)b;
    return (int64_t)((n + c - 1) / c);
}
#endif
