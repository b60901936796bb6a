/*
 * Failed RFC 1929 passwords, counted per source address so a brute force from one source
 * slows down and then stops, while other sources go on as before.
 *
 * A source that fails `limit` times within `window_ms` is throttled: each further failure is
 * answered only after a delay that doubles (SOCKS5_THROTTLE_DELAY_MS, 2x, ... up to
 * SOCKS5_THROTTLE_DELAY_MAX_MS), and at 2 x `limit` failures the source is blocked for
 * `block_ms`: every attempt from it is refused at once with the auth failure reply, its
 * password not even checked (a correct one too: a blocked source is blocked). A source is
 * IPv4 address, or an IPv6 /64 (one host's share of a network, which it can change at will).
 *
 * Memory is bounded: SOCKS5_THROTTLE_SLOTS entries, the least recently seen evicted for a
 * new source. The table belongs to one listener in one worker (one loop: no lock); time is
 * passed in, so it is tested without waiting.
 */
#ifndef BERTH_SOCKS5_THROTTLE_H
#define BERTH_SOCKS5_THROTTLE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SOCKS5_THROTTLE_SLOTS 1024
#define SOCKS5_THROTTLE_DELAY_MS 200u
#define SOCKS5_THROTTLE_DELAY_MAX_MS 3200u
/* A throttled source is logged at most once per this long. */
#define SOCKS5_THROTTLE_LOG_MS 60000u

typedef struct socks5_throttle socks5_throttle_t;

/* What to do about one attempt. */
typedef struct socks5_throttle_verdict {
    int blocked;           /* refuse now, without checking the password */
    uint64_t delay_ms;     /* answer this failure after this long */
    unsigned log_failures; /* > 0: log now "N failed password attempts from ADDR, throttled" */
    char source[64];       /* ADDR for that line: "192.0.2.7" or "2001:db8:1:2::/64" */
} socks5_throttle_verdict_t;

/* A table for `limit` failures (> 0) per `window_ms`, then `block_ms`. NULL on -ENOMEM. */
socks5_throttle_t *socks5_throttle_new(unsigned limit, uint64_t window_ms, uint64_t block_ms);
void socks5_throttle_free(socks5_throttle_t *t);

/* Before checking a password from `src`: is the source blocked? Fills *v (blocked, and
 * maybe a log line). A source that is not IPv4 or IPv6 (a unix socket peer) is never
 * throttled. */
void socks5_throttle_attempt(socks5_throttle_t *t, const struct sockaddr *src, uint64_t now_ms,
                             socks5_throttle_verdict_t *v);

/* After a wrong password from `src`: count it; fills *v (delay, and maybe a log line). */
void socks5_throttle_failed(socks5_throttle_t *t, const struct sockaddr *src, uint64_t now_ms,
                            socks5_throttle_verdict_t *v);

#endif
