/*
 * HAProxy's agent-check, answered by the master on `[daemon] agent = ADDRESS`: each TCP
 * connection gets one line, then the close. The line says what the balancer should do with
 * this host: "up ready N%" while a generation serves (N from the listeners' free
 * concurrency), "drain" from SIGTERM until drain_delay has passed, "down" when no generation
 * serves. The agent knows nothing of the master: it asks `ops` for the line.
 */
#ifndef BERTH_AGENT_H
#define BERTH_AGENT_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct agent agent_t;

typedef struct agent_ops {
    /* The answer, "...\n", into buf (NUL-terminated). */
    void (*answer)(void *ctx, char *buf, size_t len);
} agent_ops_t;

/* Listen on addr. NULL with a message in err on failure. */
agent_t *agent_open(uv_loop_t *loop, const struct sockaddr *addr, const agent_ops_t *ops, void *ctx,
                    char *err, size_t errlen);
/* Stop listening; the agent is freed once its handle has closed. NULL is fine. */
void agent_close(agent_t *a);

#endif
