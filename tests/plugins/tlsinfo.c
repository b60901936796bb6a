/*
 * tlsinfo: a test plugin that says what the TLS handshake settled, through host->tls_info,
 * then echoes. On setup() it writes one line:
 *   "tls PROTOCOL CIPHER SNI ALPN SUBJECT SAN\n"   (a member that does not apply is "-")
 * or "notls\n" on a conn without TLS (host->tls_info answered -ENOTSUP).
 */
#include <berth/handler.h>

#include <errno.h>
#include <stdio.h>

static const berth_host_t *host;

static int tlsinfo_load(const berth_host_t *h)
{
    if (!BERTH_HOST_HAS(h, tls_info))
        return -ENOTSUP;
    host = h;
    return 0;
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static int tlsinfo_setup(berth_conn_t *c)
{
    berth_tls_info_t info;
    char line[2048];
    int rc = host->tls_info(c, &info);
    if (rc == -ENOTSUP)
        snprintf(line, sizeof line, "notls\n");
    else if (rc != 0)
        return rc;
    else
        snprintf(line, sizeof line, "tls %s %s %s %s %s %s\n", or_dash(info.protocol),
                 or_dash(info.cipher), or_dash(info.server_name), or_dash(info.alpn),
                 or_dash(info.client_subject), or_dash(info.client_san));
    int n = 0;
    while (line[n])
        n++;
    return host->write(c, line, (size_t)n);
}

static void tlsinfo_handle(berth_conn_t *c, const void *data, size_t len)
{
    host->write(c, data, len);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("tlsinfo"),
    .load = tlsinfo_load,
    .setup = tlsinfo_setup,
    .handle = tlsinfo_handle,
};
