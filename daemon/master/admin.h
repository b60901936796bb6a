/*
 * The admin socket berthctl talks to: a unix stream socket, owner-only (0600). One
 * request per connection, a line: "status", "status --json", "reload", "stop". The answer
 * is a first line "ok" or "error", then the body, then EOF.
 */
#ifndef BERTH_ADMIN_H
#define BERTH_ADMIN_H

#include "config/config.h"

struct master;
typedef struct admin admin_t;

admin_t *admin_open(struct master *m, const char *path, config_errors_t *errs);
/* Stop accepting requests (the daemon is stopping); answers in flight still go out. */
void admin_stop(admin_t *a);
void admin_free(admin_t *a);
/* The status report, as text or JSON; the caller frees it. */
char *admin_status(struct master *m, int json);

#endif
