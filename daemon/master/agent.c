/*
 * The agent-check responder (see agent.h). HAProxy connects, reads one line and closes; so
 * the answer is written at accept with one non-blocking write (a few bytes: the socket
 * buffer takes them whole) and the connection closed at once: no per-check state outlives
 * the accept callback but the handle's close.
 */
#include "master/agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"

struct agent {
    uv_tcp_t server;
    const agent_ops_t *ops;
    void *ctx;
    char at[256]; /* [daemon] agent as configured */
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

static agent_t *agent_new(uv_loop_t *loop, const char *at, const agent_ops_t *ops, void *ctx)
{
    agent_t *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->ops = ops;
    a->ctx = ctx;
    snprintf(a->at, sizeof a->at, "%s", at ? at : "");
    uv_tcp_init(loop, &a->server);
    a->server.data = a;
    return a;
}

static agent_t *agent_listen(agent_t *a, int rc, char *err, size_t errlen)
{
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->server, 64, on_connection);
    if (rc) {
        snprintf(err, errlen, "%s", uv_strerror(rc));
        uv_close((uv_handle_t *)&a->server, on_server_closed);
        return NULL;
    }
    return a;
}

agent_t *agent_open(uv_loop_t *loop, const struct sockaddr *addr, const char *at,
                    const agent_ops_t *ops, void *ctx, char *err, size_t errlen)
{
    agent_t *a = agent_new(loop, at, ops, ctx);
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if ((a = agent_listen(a, uv_tcp_bind(&a->server, addr, 0), err, errlen)) == NULL)
        return NULL;
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getsockname(&a->server, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((const struct sockaddr_in6 *)&ss, host, sizeof host);
            port = ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((const struct sockaddr_in *)&ss, host, sizeof host);
            port = ntohs(((const struct sockaddr_in *)&ss)->sin_port);
        }
    }
    log_info(ss.ss_family == AF_INET6 ? "agent: answering agent-checks on [%s]:%d"
                                      : "agent: answering agent-checks on %s:%d",
             host, port);
    return a;
}

agent_t *agent_adopt(uv_loop_t *loop, int fd, const char *at, const agent_ops_t *ops, void *ctx,
                     char *err, size_t errlen)
{
    int listening = 0;
    socklen_t ll = sizeof listening;
    agent_t *a = NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) < 0 || !listening)
        snprintf(err, errlen, "descriptor %d is not a listening socket", fd);
    else if ((a = agent_new(loop, at, ops, ctx)) == NULL)
        snprintf(err, errlen, "out of memory");
    if (a == NULL) {
        close(fd);
        return NULL;
    }
    int rc = uv_tcp_open(&a->server, fd);
    if (rc)
        close(fd); /* not the handle's */
    /* listen() again on a listening socket only sets the backlog: the checks that waited in
     * it during the exec are answered now. */
    return agent_listen(a, rc, err, errlen);
}

int agent_fd(const agent_t *a)
{
    uv_os_fd_t fd = -1;
    if (a == NULL || uv_is_closing((const uv_handle_t *)&a->server) ||
        uv_fileno((const uv_handle_t *)&a->server, &fd) < 0)
        return -1;
    return fd;
}

const char *agent_at(const agent_t *a)
{
    return a ? a->at : "";
}

void agent_close(agent_t *a)
{
    if (a && !uv_is_closing((uv_handle_t *)&a->server))
        uv_close((uv_handle_t *)&a->server, on_server_closed);
}
