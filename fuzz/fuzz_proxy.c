/*
 * The PROXY protocol parser (lib/proxy.c) on arbitrary bytes: the first byte picks the
 * versions allowed and how the rest is cut into pieces, so the incremental paths are
 * exercised as well as the whole-buffer one. Whatever the input, the parser must not read or
 * write out of bounds, must agree with itself fed whole or in pieces, and a result it accepts
 * must be self-consistent.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "berth/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static berth_proxy_t whole, pieces;
    if (size < 1)
        return 0;
    unsigned versions = (data[0] & 3u) ? (data[0] & 3u) : 3u;
    size_t step = (size_t)(data[0] >> 2) + 1; /* 1..64 bytes per piece */
    data++;
    size--;

    berth_proxy_init(&whole, versions);
    size_t used_whole = 0;
    int rw = berth_proxy_feed(&whole, data, size, &used_whole);

    berth_proxy_init(&pieces, versions);
    int rp = 0;
    size_t used = 0, off = 0;
    while (rp == 0 && off < size) {
        size_t n = size - off < step ? size - off : step;
        size_t u = 0;
        rp = berth_proxy_feed(&pieces, data + off, n, &u);
        if (u > n)
            abort();
        used += u;
        off += n;
    }
    if (rw != rp)
        abort();
    if (rw == 1) {
        if (used != used_whole || used_whole > size)
            abort();
        if (memcmp(&whole.result, &pieces.result, sizeof whole.result) != 0)
            abort();
        const berth_proxy_result_t *r = &whole.result;
        if (r->family == AF_INET && (r->src.ss_family != AF_INET || r->srclen == 0))
            abort();
        if (r->family == AF_INET6 && (r->src.ss_family != AF_INET6 || r->srclen == 0))
            abort();
        if (r->version == 1 && used_whole > BERTH_PROXY_V1_MAX)
            abort();
        if (used_whole > BERTH_PROXY_V2_MAX)
            abort();
    } else if (rw == 0) {
        if (used_whole != size)
            abort();
    } else if (berth_proxy_strerror(rw)[0] == '\0') {
        abort();
    }
    return 0;
}
