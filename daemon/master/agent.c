/*
 * The agent-check responder (see agent.h). HAProxy connects, reads one line and closes; so
 * the answer is written at accept with one non-blocking write (a few bytes: the socket
 * buffer takes them whole) and the connection closed at once: no per-check state outlives
 * the accept callback but the handle's close.
 */
#include "master/agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"

struct agent {
    uv_tcp_t server;
    const agent_ops_t *ops;
    void *ctx;
};

static void on_server_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_client_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    agent_t *a = server->data;
    if (status < 0)
        return;
    uv_tcp_t *client = malloc(sizeof *client);
    if (client == NULL)
        return; /* the pending conn is taken by the next accept */
    uv_tcp_init(server->loop, client);
    uv_os_fd_t fd = -1;
    if (uv_accept(server, (uv_stream_t *)client) == 0 &&
        uv_fileno((uv_handle_t *)client, &fd) == 0) {
        char line[64];
        a->ops->answer(a->ctx, line, sizeof line);
        if (send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            log_debug("agent: send: %s", strerror(errno));
        /* Read what the balancer may have sent (agent-send), so closing does not reset the
         * connection under the answer. */
        char junk[256];
        while (recv(fd, junk, sizeof junk, MSG_DONTWAIT) > 0) {
        }
    }
    uv_close((uv_handle_t *)client, on_client_closed);
}

agent_t *agent_open(uv_loop_t *loop, const struct sockaddr *addr, const agent_ops_t *ops, void *ctx,
                    char *err, size_t errlen)
{
    agent_t *a = calloc(1, sizeof *a);
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->ops = ops;
    a->ctx = ctx;
    uv_tcp_init(loop, &a->server);
    a->server.data = a;
    int rc = uv_tcp_bind(&a->server, addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->server, 64, on_connection);
    if (rc) {
        snprintf(err, errlen, "%s", uv_strerror(rc));
        uv_close((uv_handle_t *)&a->server, on_server_closed);
        return NULL;
    }
    return a;
}

void agent_close(agent_t *a)
{
    if (a && !uv_is_closing((uv_handle_t *)&a->server))
        uv_close((uv_handle_t *)&a->server, on_server_closed);
}
