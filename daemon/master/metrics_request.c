/*
 * The one request /metrics understands (see metrics.h): a request line "METHOD TARGET
 * HTTP/1.x", headers that are skipped, and the blank line that ends them (CRLF or bare LF).
 * Nothing is allocated; the caller owns the buffer and its cap.
 */
#include <string.h>

#include "master/metrics.h"

static int tchar(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Where the headers end (just past the blank line), or NULL. */
static const char *headers_end(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n')
            return buf + i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return buf + i + 3;
    }
    return NULL;
}

metrics_req_status_t metrics_request_parse(const char *buf, size_t len, int *head)
{
    *head = 0;
    if (headers_end(buf, len) == NULL)
        return len >= METRICS_REQUEST_MAX ? METRICS_REQ_TOO_BIG : METRICS_REQ_MORE;
    /* The request line: up to the first LF. */
    const char *eol = memchr(buf, '\n', len);
    size_t n = (size_t)(eol - buf);
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    const char *p = buf, *end = buf + n;
    const char *method = p;
    while (p < end && tchar(*p))
        p++;
    size_t mlen = (size_t)(p - method);
    if (mlen == 0 || p >= end || *p != ' ')
        return METRICS_REQ_BAD;
    const char *target = ++p;
    while (p < end && *p != ' ' && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f)
        p++;
    size_t tlen = (size_t)(p - target);
    if (tlen == 0 || p >= end || *p != ' ')
        return METRICS_REQ_BAD;
    const char *version = ++p;
    size_t vlen = (size_t)(end - version);
    if (vlen != 8 || memcmp(version, "HTTP/1.", 7) != 0)
        return vlen >= 5 && memcmp(version, "HTTP/", 5) == 0 ? METRICS_REQ_VERSION
                                                             : METRICS_REQ_BAD;
    if (version[7] != '0' && version[7] != '1')
        return METRICS_REQ_VERSION;
    size_t plen = 0;
    while (plen < tlen && target[plen] != '?')
        plen++;
    if (plen != 8 || memcmp(target, "/metrics", 8) != 0)
        return METRICS_REQ_NOT_FOUND;
    if (mlen == 4 && memcmp(method, "HEAD", 4) == 0)
        *head = 1;
    else if (mlen != 3 || memcmp(method, "GET", 3) != 0)
        return METRICS_REQ_METHOD;
    return METRICS_REQ_OK;
}
