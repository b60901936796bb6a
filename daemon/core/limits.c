/*
 * The per-source table (see limits.h). Layout of the one shared mapping: a header (the
 * shard locks, the hash seed), then one journal per worker slot, then the entries.
 *
 * Lookup scans a window of WINDOW entries from the key's hash, inside the key's shard: the
 * key anywhere in the window, else the first free or stale entry of it (no connection held,
 * its bucket full again), else the table is full for that key. A fixed window instead of
 * open chains means no tombstones and a bounded cost per connection whatever the load.
 */
#include "core/limits.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/stats.h"

#define SHARDS 64u
#define WINDOW 32u
#define JOURNAL 4096u /* distinct sources one worker can give back after its death */
#define JWINDOW 64u
#define LOG_EVERY_MS 60000u
#define MILLI 1000u /* a token, in the bucket's units */

typedef struct entry {
    uint8_t key[16];   /* the source, IPv4 as ::ffff:a.b.c.d */
    uint32_t listener; /* stats slot + 1; 0: never used */
    uint32_t conns;
    uint32_t rate, burst; /* of the rule that made it, to know when it is stale */
    uint64_t tokens;      /* in 1/MILLI tokens */
    uint64_t refill_ms;
    uint64_t logged_ms;
} entry_t;

typedef struct jslot {
    uint32_t entry; /* + 1; 0: free */
    uint32_t count;
} jslot_t;

typedef struct header {
    uint32_t n, shards, shard_size, window;
    uint64_t seed;
    _Atomic uint64_t full_logged_ms;
    _Atomic uint64_t journal_full_logged_ms;
    pthread_mutex_t mu[SHARDS];
} header_t;

static struct {
    int fd; /* the memfd behind the mapping; 0 is never one of ours (stdin) */
    void *base;
    size_t len;
    uint32_t requested;
    header_t *h;
    jslot_t *journals; /* [STATS_WORKERS][JOURNAL] */
    entry_t *entries;
} T;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int limits_map(uint32_t entries)
{
    if (T.base)
        return 0;
    /* Full shards of at least a window each; a table smaller than SHARDS windows has fewer
     * shards, and one smaller than a window is one shard of exactly `entries`. */
    if (entries == 0)
        entries = 1;
    uint32_t shards = SHARDS, shard = (entries + SHARDS - 1) / SHARDS;
    if (shard < WINDOW) {
        shard = entries < WINDOW ? entries : WINDOW;
        shards = (entries + shard - 1) / shard;
        if (shards > SHARDS)
            shards = SHARDS;
    }
    uint32_t n = shard * shards;
    size_t hlen = (sizeof(header_t) + 63) & ~(size_t)63;
    size_t jlen = (size_t)STATS_WORKERS * JOURNAL * sizeof(jslot_t);
    size_t len = hlen + jlen + (size_t)n * sizeof(entry_t);
    /* A memfd, so that a binary upgrade can hand the table to the new image. */
    int fd = memfd_create("berth-limits", MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    void *p = ftruncate(fd, (off_t)len) == 0
                  ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        return -e;
    }
    T.fd = fd;
    header_t *h = p;
    h->n = n;
    h->shards = shards;
    h->shard_size = shard;
    h->window = shard < WINDOW ? shard : WINDOW;
    if (getrandom(&h->seed, sizeof h->seed, GRND_NONBLOCK) != sizeof h->seed)
        h->seed = now_ms() * 0x9E3779B97F4A7C15ull; /* weaker, but the table still works */
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    for (unsigned i = 0; i < SHARDS; i++)
        pthread_mutex_init(&h->mu[i], &a);
    pthread_mutexattr_destroy(&a);
    T.base = p;
    T.len = len;
    T.requested = entries;
    T.h = h;
    T.journals = (jslot_t *)(void *)((char *)p + hlen);
    T.entries = (entry_t *)(void *)((char *)p + hlen + jlen);
    return 0;
}

void limits_unmap(void)
{
    if (T.base)
        munmap(T.base, T.len);
    if (T.fd > 0)
        close(T.fd);
    memset(&T, 0, sizeof T);
}

int limits_fd(size_t *len)
{
    *len = T.len;
    return T.base && T.fd > 0 ? T.fd : -1;
}

int limits_adopt(int fd, size_t len, uint32_t entries)
{
    size_t hlen = (sizeof(header_t) + 63) & ~(size_t)63;
    size_t jlen = (size_t)STATS_WORKERS * JOURNAL * sizeof(jslot_t);
    if (T.base || len < hlen + jlen)
        return -EPROTO;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    header_t *h = p;
    if (h->shards == 0 || h->shards > SHARDS ||
        hlen + jlen + (size_t)h->n * sizeof(entry_t) != len) {
        munmap(p, len);
        return -EPROTO; /* another layout: not this release's table */
    }
    T.fd = fd;
    T.base = p;
    T.len = len;
    T.requested = entries;
    T.h = h;
    T.journals = (jslot_t *)(void *)((char *)p + hlen);
    T.entries = (entry_t *)(void *)((char *)p + hlen + jlen);
    return 0;
}

uint32_t limits_size(void)
{
    return T.h ? T.requested : 0;
}

static void lock(unsigned shard)
{
    /* A worker killed while holding it: the entries it was changing may be off by one
     * connection, never worse; the lock itself is whole again. */
    if (pthread_mutex_lock(&T.h->mu[shard]) == EOWNERDEAD)
        pthread_mutex_consistent(&T.h->mu[shard]);
}

static void unlock(unsigned shard)
{
    pthread_mutex_unlock(&T.h->mu[shard]);
}

/* The source's key; 0, or -1 for a peer that has no IP address. */
static int source_key(const limits_rule_t *r, const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) {
        memcpy(key, a, 16); /* an IPv4 client of an IPv6 socket is that IPv4 address */
        return 0;
    }
    uint32_t bits = r->prefix6 ? r->prefix6 : 64;
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
        key[i] = (uint8_t)(a[i] & (uint8_t)(0xff00u >> keep));
    }
    return 0;
}

void limits_source_text(const limits_rule_t *r, const struct sockaddr *peer, char *out, size_t len)
{
    uint8_t key[16];
    char ip[INET6_ADDRSTRLEN] = "?";
    if (source_key(r, peer, key) < 0) {
        snprintf(out, len, "?");
        return;
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(key, mapped, 12) == 0) {
        inet_ntop(AF_INET, key + 12, ip, sizeof ip);
        snprintf(out, len, "%s", ip);
    } else {
        inet_ntop(AF_INET6, key, ip, sizeof ip);
        snprintf(out, len, "%s/%u", ip, r->prefix6 ? r->prefix6 : 64);
    }
}

static uint64_t hash(const uint8_t key[16], uint32_t listener)
{
    uint64_t h = 0xcbf29ce484222325ull ^ T.h->seed;
    for (unsigned i = 0; i < 16; i++)
        h = (h ^ key[i]) * 0x100000001b3ull;
    for (unsigned i = 0; i < 4; i++)
        h = (h ^ ((listener >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

/* Bring e's bucket up to now. */
static void refill(entry_t *e, uint64_t now)
{
    if (e->rate == 0)
        return;
    uint64_t cap = (uint64_t)(e->burst ? e->burst : e->rate) * MILLI;
    uint64_t dt = now > e->refill_ms ? now - e->refill_ms : 0;
    uint64_t add = dt * e->rate; /* rate per second is rate * MILLI per 1000 ms */
    e->tokens = cap - e->tokens <= add ? cap : e->tokens + add;
    e->refill_ms = now;
}

static int stale(entry_t *e, uint64_t now)
{
    if (e->listener == 0)
        return 1;
    if (e->conns > 0)
        return 0;
    refill(e, now);
    return e->rate == 0 || e->tokens >= (uint64_t)(e->burst ? e->burst : e->rate) * MILLI;
}

/* The worker's own record of what it holds; single writer, read by the master after it died. */
static void journal_add(int wslot, uint32_t entry, int delta)
{
    if (wslot < 0 || wslot >= STATS_WORKERS)
        return;
    jslot_t *j = &T.journals[(size_t)wslot * JOURNAL];
    uint32_t start = (uint32_t)((entry * 2654435761u) % JOURNAL), spare = JOURNAL;
    for (uint32_t i = 0; i < JWINDOW; i++) {
        uint32_t k = (start + i) % JOURNAL;
        if (j[k].entry == entry + 1) {
            if (delta < 0 && j[k].count > 0)
                j[k].count--;
            else if (delta > 0)
                j[k].count++;
            return;
        }
        if (spare == JOURNAL && j[k].count == 0)
            spare = k;
    }
    if (delta < 0)
        return;
    if (spare == JOURNAL) {
        uint64_t now = now_ms(), last = atomic_load(&T.h->journal_full_logged_ms);
        if ((last == 0 || now - last >= LOG_EVERY_MS) &&
            atomic_compare_exchange_strong(&T.h->journal_full_logged_ms, &last, now))
            log_warn("per-source journal of worker slot %d is full: a crash of it would leave "
                     "some sources counted",
                     wslot);
        return;
    }
    j[spare].entry = entry + 1;
    j[spare].count = 1;
}

int limits_admit(const limits_rule_t *r, int wslot, const struct sockaddr *peer, int32_t *entry)
{
    uint8_t key[16];
    *entry = -1;
    if (T.h == NULL || (r->per_source == 0 && r->rate == 0) || source_key(r, peer, key) < 0)
        return LIMITS_OK;
    uint32_t lid = (uint32_t)r->listener + 1;
    uint64_t h = hash(key, lid), now = now_ms();
    unsigned shard = (unsigned)(h % T.h->shards);
    uint32_t base = shard * T.h->shard_size, start = (uint32_t)((h >> 8) % T.h->shard_size);
    entry_t *e = NULL, *spare = NULL;

    lock(shard);
    for (uint32_t i = 0; i < T.h->window; i++) {
        entry_t *x = &T.entries[base + (start + i) % T.h->shard_size];
        if (x->listener == lid && memcmp(x->key, key, 16) == 0) {
            e = x;
            break;
        }
        if (spare == NULL && stale(x, now))
            spare = x;
    }
    if (e == NULL && spare == NULL) {
        unlock(shard);
        uint64_t last = atomic_load(&T.h->full_logged_ms);
        if ((last == 0 || now - last >= LOG_EVERY_MS) &&
            atomic_compare_exchange_strong(&T.h->full_logged_ms, &last, now)) {
            char src[64];
            limits_source_text(r, peer, src, sizeof src);
            if (r->full_closed)
                log_warn("%s: the per-source table is full (per_source_table = %u): %s and "
                         "other new sources are refused (per_source_table_full = closed; said "
                         "once a minute)",
                         r->name, T.requested, src);
            else
                log_warn("%s: the per-source table is full (per_source_table = %u): %s and "
                         "other new sources are let in without a limit (per_source_table_full "
                         "= open; said once a minute)",
                         r->name, T.requested, src);
        }
        return r->full_closed ? LIMITS_TABLE_FULL : LIMITS_OK;
    }
    uint64_t cap = (uint64_t)(r->burst ? r->burst : r->rate) * MILLI;
    if (e == NULL) {
        e = spare;
        memset(e, 0, sizeof *e);
        memcpy(e->key, key, 16);
        e->listener = lid;
        e->rate = r->rate;
        e->burst = r->burst;
        e->tokens = cap; /* a new source starts with a full bucket */
        e->refill_ms = now;
    } else if (e->rate != r->rate || e->burst != r->burst) {
        /* A reload changed the rule: the bucket so far at the old rate, then the new one. */
        refill(e, now);
        e->rate = r->rate;
        e->burst = r->burst;
        if (e->tokens > cap)
            e->tokens = cap;
    }
    refill(e, now);
    int verdict = LIMITS_OK;
    if (r->per_source && e->conns >= r->per_source)
        verdict = LIMITS_OVER_CONNS;
    else if (r->rate && e->tokens < MILLI)
        verdict = LIMITS_OVER_RATE;
    int log_now = 0;
    if (verdict == LIMITS_OK) {
        if (r->rate)
            e->tokens -= MILLI;
        if (r->per_source) {
            e->conns++;
            *entry = (int32_t)(e - T.entries);
        }
    } else if (e->logged_ms == 0 || now - e->logged_ms >= LOG_EVERY_MS) {
        e->logged_ms = now;
        log_now = 1;
    }
    unlock(shard);
    if (*entry >= 0)
        journal_add(wslot, (uint32_t)*entry, +1);
    if (log_now) {
        char src[64];
        limits_source_text(r, peer, src, sizeof src);
        if (verdict == LIMITS_OVER_CONNS)
            log_info("%s: %s has per_source = %u connections open; %s more (said once a "
                     "minute)",
                     r->name, src, r->per_source,
                     r->over_wait ? "holding (over_limit = wait)" : "refusing");
        else
            log_info("%s: %s connects faster than rate = %u/s (burst %u); refusing (said once a "
                     "minute)",
                     r->name, src, r->rate, r->burst ? r->burst : r->rate);
    }
    return verdict;
}

static void give_back(uint32_t entry, uint32_t count)
{
    if (T.h == NULL || entry >= T.h->n)
        return;
    unsigned shard = entry / T.h->shard_size;
    lock(shard);
    entry_t *e = &T.entries[entry];
    e->conns = e->conns > count ? e->conns - count : 0;
    unlock(shard);
}

void limits_release(int wslot, int32_t entry)
{
    if (entry < 0)
        return;
    give_back((uint32_t)entry, 1);
    journal_add(wslot, (uint32_t)entry, -1);
}

void limits_settle(int wslot)
{
    if (T.h == NULL || wslot < 0 || wslot >= STATS_WORKERS)
        return;
    jslot_t *j = &T.journals[(size_t)wslot * JOURNAL];
    for (uint32_t k = 0; k < JOURNAL; k++) {
        if (j[k].entry && j[k].count)
            give_back(j[k].entry - 1, j[k].count);
        j[k].entry = j[k].count = 0;
    }
}
