/* The admin request line: admin_parse_request over any bytes, at any length a client may
 * have sent so far (it is called after every read). */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "master/admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The admin reads at most ADMIN_REQUEST_MAX - 1 bytes before it decides. */
    if (size > ADMIN_REQUEST_MAX - 1)
        size = ADMIN_REQUEST_MAX - 1;
    /* An exact-size copy, so ASan sees any read past what was received. */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    for (size_t len = 0; len <= size; len++) {
        const char *arg = NULL;
        size_t arglen = 0;
        admin_req_t r = admin_parse_request(buf, len, &arg, &arglen);
        if (r == ADMIN_REQ_RESUME) /* the name lies inside what was received */
            assert(arg > buf && arglen >= 1 && arglen <= 63 && arg + arglen <= buf + len);
        int has_nl = memchr(buf, '\n', len) != NULL;
        /* A full line is always decided; without one, only the cap decides. */
        assert(has_nl
                   ? (r != ADMIN_REQ_NONE && r != ADMIN_REQ_TOO_LONG)
                   : (r == (len >= ADMIN_REQUEST_MAX - 1 ? ADMIN_REQ_TOO_LONG : ADMIN_REQ_NONE)));
    }
    free(buf);
    return 0;
}
