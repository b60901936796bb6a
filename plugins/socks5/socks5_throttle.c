/* Failed passwords per source: see socks5_throttle.h. */
#include "socks5_throttle.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    uint8_t key[16]; /* IPv4 as ::ffff:a.b.c.d; IPv6 as its /64 */
    uint8_t used;
    unsigned failures; /* in the window that began at window_ms */
    unsigned unlogged; /* failures and refusals not yet in a log line */
    uint64_t window_ms;
    uint64_t blocked_until;
    uint64_t logged_ms; /* when the last line was logged, 0: never */
    uint64_t seen_ms;
} entry_t;

struct socks5_throttle {
    unsigned limit;
    uint64_t window_ms, block_ms;
    entry_t slots[SOCKS5_THROTTLE_SLOTS];
};

socks5_throttle_t *socks5_throttle_new(unsigned limit, uint64_t window_ms, uint64_t block_ms)
{
    socks5_throttle_t *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->limit = limit ? limit : 1;
    t->window_ms = window_ms;
    t->block_ms = block_ms;
    return t;
}

void socks5_throttle_free(socks5_throttle_t *t)
{
    free(t);
}

/* 0 and the key of `src`, or -1 if it is not an IP source. */
static int source_key(const struct sockaddr *src, uint8_t key[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (src == NULL)
        return -1;
    if (src->sa_family == AF_INET) {
        memcpy(key, mapped, 12);
        memcpy(key + 12, &((const struct sockaddr_in *)src)->sin_addr, 4);
        return 0;
    }
    if (src->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)src)->sin6_addr.s6_addr;

        memcpy(key, a, 16);
        if (memcmp(a, mapped, 12) != 0)
            memset(key + 8, 0, 8); /* a host picks any address in its /64 */
        return 0;
    }
    return -1;
}

static void format_key(const uint8_t key[16], char *out, size_t len)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char ip[INET6_ADDRSTRLEN];

    if (memcmp(key, mapped, 12) == 0) {
        inet_ntop(AF_INET, key + 12, ip, sizeof(ip));
        snprintf(out, len, "%s", ip);
    } else {
        inet_ntop(AF_INET6, key, ip, sizeof(ip));
        snprintf(out, len, "%s/64", ip);
    }
}

/* The entry for `key`, made (evicting the least recently seen) if there is none. */
static entry_t *find(socks5_throttle_t *t, const uint8_t key[16], uint64_t now_ms, int create)
{
    entry_t *victim = NULL;

    for (size_t i = 0; i < SOCKS5_THROTTLE_SLOTS; i++) {
        entry_t *e = &t->slots[i];

        if (e->used && memcmp(e->key, key, 16) == 0)
            return e;
        if (victim == NULL || (victim->used && (!e->used || e->seen_ms < victim->seen_ms)))
            victim = e;
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    victim->used = 1;
    memcpy(victim->key, key, 16);
    victim->window_ms = now_ms;
    return victim;
}

/* Forget what is over: an ended block, or a window without enough failures. */
static void age(socks5_throttle_t *t, entry_t *e, uint64_t now_ms)
{
    if (e->blocked_until != 0) {
        if (now_ms < e->blocked_until)
            return;
        e->blocked_until = 0;
        e->failures = 0;
        e->window_ms = now_ms;
        return;
    }
    if (now_ms - e->window_ms >= t->window_ms) {
        e->failures = 0;
        e->window_ms = now_ms;
    }
}

static void maybe_log(entry_t *e, uint64_t now_ms, socks5_throttle_verdict_t *v)
{
    if (e->unlogged == 0 || (e->logged_ms != 0 && now_ms - e->logged_ms < SOCKS5_THROTTLE_LOG_MS))
        return;
    v->log_failures = e->unlogged;
    e->unlogged = 0;
    e->logged_ms = now_ms;
    format_key(e->key, v->source, sizeof(v->source));
}

void socks5_throttle_attempt(socks5_throttle_t *t, const struct sockaddr *src, uint64_t now_ms,
                             socks5_throttle_verdict_t *v)
{
    uint8_t key[16];
    entry_t *e;

    memset(v, 0, sizeof(*v));
    if (t == NULL || source_key(src, key) != 0 || (e = find(t, key, now_ms, 0)) == NULL)
        return;
    e->seen_ms = now_ms;
    age(t, e, now_ms);
    if (e->blocked_until == 0)
        return;
    v->blocked = 1;
    e->unlogged++;
    maybe_log(e, now_ms, v);
}

void socks5_throttle_failed(socks5_throttle_t *t, const struct sockaddr *src, uint64_t now_ms,
                            socks5_throttle_verdict_t *v)
{
    uint8_t key[16];
    entry_t *e;

    memset(v, 0, sizeof(*v));
    if (t == NULL || source_key(src, key) != 0)
        return;
    e = find(t, key, now_ms, 1);
    e->seen_ms = now_ms;
    age(t, e, now_ms);
    e->failures++;
    e->unlogged++;
    if (e->failures < t->limit)
        return;
    if (e->failures > t->limit) {
        unsigned k = e->failures - t->limit - 1;
        uint64_t d = SOCKS5_THROTTLE_DELAY_MS;

        while (k-- > 0 && d < SOCKS5_THROTTLE_DELAY_MAX_MS)
            d *= 2;
        v->delay_ms = d < SOCKS5_THROTTLE_DELAY_MAX_MS ? d : SOCKS5_THROTTLE_DELAY_MAX_MS;
    }
    if (e->failures >= 2 * t->limit && e->blocked_until == 0)
        e->blocked_until = now_ms + t->block_ms;
    maybe_log(e, now_ms, v);
}
