/* The /metrics request (metrics_request_parse, called after every read with all bytes so
 * far) and the plugin metric name check (stats_metric_name_ok), over any bytes. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/stats.h"
#include "master/metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int ends_headers(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if (buf[i] == '\n' &&
            (buf[i + 1] == '\n' || (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')))
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > METRICS_REQUEST_MAX)
        size = METRICS_REQUEST_MAX;
    /* An exact-size copy, so ASan sees any read past what was received. */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    for (size_t len = 0; len <= size; len++) {
        int head = -1;
        metrics_req_status_t st = metrics_request_parse(buf, len, &head);
        assert(head == 0 || (head == 1 && st == METRICS_REQ_OK));
        /* Decided once the headers end; before that only the cap decides. */
        if (ends_headers(buf, len))
            assert(st != METRICS_REQ_MORE && st != METRICS_REQ_TOO_BIG);
        else
            assert(st == (len >= METRICS_REQUEST_MAX ? METRICS_REQ_TOO_BIG : METRICS_REQ_MORE));
    }
    /* The name check reads a NUL-terminated string. */
    char *name = malloc(size + 1);
    if (name) {
        memcpy(name, data, size);
        name[size] = '\0';
        if (stats_metric_name_ok(name)) {
            size_t n = strlen(name);
            assert(n > 0 && n < STATS_METRIC_NAME && !strchr(name, '\\') && !strchr(name, '\n'));
            assert(strstr(name, "listener=") == NULL);
        }
        free(name);
    }
    free(buf);
    return 0;
}
