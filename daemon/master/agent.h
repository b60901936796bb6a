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

/* Listen on addr (`at`: the address as configured, kept for a handover). NULL with a message
 * in err on failure. */
agent_t *agent_open(uv_loop_t *loop, const struct sockaddr *addr, const char *at,
                    const agent_ops_t *ops, void *ctx, char *err, size_t errlen);
/* binary upgrade: answer on `fd`, the listening socket the previous image handed over for
 * `at`. NULL with a message in err on failure (fd is closed then). */
agent_t *agent_adopt(uv_loop_t *loop, int fd, const char *at, const agent_ops_t *ops, void *ctx,
                     char *err, size_t errlen);
/* The listening descriptor, for a handover (-1 if none), and its address as configured. */
int agent_fd(const agent_t *a);
const char *agent_at(const agent_t *a);
/* Stop listening; the agent is freed once its handle has closed. NULL is fine. */
void agent_close(agent_t *a);

#endif
