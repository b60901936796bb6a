/*
 * ack: the seeds' multicast receiver (socket_multicast_receiver.py) as a plugin. Every
 * datagram is answered, by unicast to its sender, with one datagram: the listener's `ack`
 * text ("ack" unless set), so a test can tell two receivers on one host apart. With
 * `group = yes` the text is followed by a space and the group the datagram was sent to
 * (host->multicast_group), or "unicast".
 *
 * Options: `ack` (1..15 printable characters: the seed's sender reads 16 bytes), `group`
 * (a boolean). Anything else is refused.
 */
#include <berth/handler.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACK_MAX 15

typedef struct ack_listener {
    char text[ACK_MAX + 1];
    int group;
} ack_listener_t;

static const berth_host_t *host;

static int ack_load(const berth_host_t *h)
{
    if (h->abi_version != BERTH_ABI_VERSION)
        return -EPROTO;
    host = h;
    return 0;
}

static int ack_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                            size_t errlen)
{
    (void)l;
    if (strcmp(key, "group") == 0) {
        int b;
        if (host->parse_bool(value, &b) < 0) {
            snprintf(err, errlen, "%s: expected yes or no", key);
            return -EINVAL;
        }
        if (b && !BERTH_HOST_HAS(host, multicast_group)) {
            snprintf(err, errlen, "this berthd cannot tell the group (no multicast_group)");
            return -EINVAL;
        }
        return 0;
    }
    if (strcmp(key, "ack") != 0) {
        snprintf(err, errlen, "ack plugin has no option '%s'", key);
        return -EINVAL;
    }
    size_t n = strlen(value);
    if (n == 0 || n > ACK_MAX) {
        snprintf(err, errlen, "%s: must be 1 to %d characters", key, ACK_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)value[i] < 0x20 || (unsigned char)value[i] > 0x7e) {
            snprintf(err, errlen, "%s: must be printable ASCII", key);
            return -EINVAL;
        }
    }
    return 0;
}

static int ack_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    ack_listener_t *al = calloc(1, sizeof *al);
    if (al == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    const char *t = host->option(l, "ack");
    snprintf(al->text, sizeof al->text, "%s", t ? t : "ack");
    const char *g = host->option(l, "group");
    if (g)
        host->parse_bool(g, &al->group);
    *state = al;
    return 0;
}

static void ack_listener_close(berth_listener_t *l, void *state)
{
    (void)l;
    free(state);
}

static void ack_handle(berth_conn_t *conn, const void *data, size_t len)
{
    const ack_listener_t *al = host->listener_state(conn);
    (void)data;
    char reply[ACK_MAX + 1 + INET6_ADDRSTRLEN + 1];
    snprintf(reply, sizeof reply, "%s", al->text);
    if (al->group) {
        const struct sockaddr *g = host->multicast_group(conn, NULL);
        char ip[INET6_ADDRSTRLEN] = "unicast";
        if (g && g->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)g)->sin_addr, ip,
                      sizeof ip);
        else if (g && g->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)g)->sin6_addr, ip,
                      sizeof ip);
        snprintf(reply, sizeof reply, "%s %s", al->text, ip);
    }
    host->log(conn, BERTH_LOG_DEBUG, "%zu bytes; answering %s", len, reply);
    if (host->write(conn, reply, strlen(reply)) < 0)
        host->abort(conn);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("ack"),
    .version = "1",
    .load = ack_load,
    .check_option = ack_check_option,
    .listener_open = ack_listener_open,
    .listener_close = ack_listener_close,
    .handle = ack_handle,
};
