/*
 * Per-source limits across every worker: one table in shared memory, mapped by the master
 * before it forks (like the counters in stats.h), so all workers of all generations count
 * the same sources, and the counts survive reloads. Each entry is one (listener, source)
 * pair: the source is the client's IPv4 address, or its IPv6 address cut to the listener's
 * per_source_prefix6. It holds the source's open connections (per_source) and a token
 * bucket of new connections (rate, burst).
 *
 * The table is bounded (per_source_table entries); a source that finds no room is let in
 * (fail open) or refused (fail closed, per_source_table_full) and the log says so at most
 * once a minute. Entries are locked by shard with
 * robust process-shared mutexes, so a worker killed inside one leaves no lock held. Each
 * worker also records, in its own journal in the same mapping, which entries it holds
 * connections in, so the master gives them back when the worker dies (as for stats).
 */
#ifndef BERTH_LIMITS_H
#define BERTH_LIMITS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define LIMITS_DEFAULT_TABLE 65536u
#define LIMITS_MIN_TABLE 1u
#define LIMITS_MAX_TABLE (16u * 1024u * 1024u)

/* What one listener asks of its sources (0: that limit is off). */
typedef struct limits_rule {
    uint32_t per_source; /* open connections */
    uint32_t rate;       /* new connections per second */
    uint32_t burst;      /* bucket size; 0 = rate */
    uint32_t prefix6;    /* IPv6 sources grouped by this prefix */
    int listener;        /* the listener's stats slot (stable across reloads) */
    int full_closed;     /* a source that finds the table full is refused (else let in) */
    int over_wait;       /* over per_source, the conn waits (over_limit = wait): for the log */
    const char *name;    /* for log lines */
} limits_rule_t;

enum limits_verdict {
    LIMITS_OK = 0,     /* admitted; *entry is held (or -1: no limit applies / table full) */
    LIMITS_OVER_CONNS, /* per_source reached */
    LIMITS_OVER_RATE,  /* no token left */
    LIMITS_TABLE_FULL, /* no room for a new source, and full_closed */
};

/* Master, before the first fork: map a table of `entries` (rounded up) and the journals.
 * 0 or -errno. The mapping is inherited by every worker. */
int limits_map(uint32_t entries);
void limits_unmap(void);
/* Binary upgrade: the mapping's descriptor (close-on-exec) and length, -1 when not mapped;
 * and the new image mapping the one it was handed (-EPROTO: another layout). */
int limits_fd(size_t *len);
int limits_adopt(int fd, size_t len, uint32_t entries);
/* The per_source_table the table was mapped for (0 when not mapped); it holds at least that
 * many entries. */
uint32_t limits_size(void);

/* Worker: may a new connection from `peer` in? On LIMITS_OK with *entry >= 0, one connection
 * is held in that entry by worker `wslot` until limits_release. A refusal is logged here, at
 * most once a minute per source; so is a full table, at most once a minute in all. */
int limits_admit(const limits_rule_t *r, int wslot, const struct sockaddr *peer, int32_t *entry);
void limits_release(int wslot, int32_t entry);

/* Master: worker `wslot` is gone; give back every connection its journal holds. */
void limits_settle(int wslot);

/* The source of `peer` as text ("192.0.2.1", "2001:db8::/64"), for log lines. */
void limits_source_text(const limits_rule_t *r, const struct sockaddr *peer, char *out, size_t len);

#endif
