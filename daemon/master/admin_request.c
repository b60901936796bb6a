/* The admin request line, parsed apart from any socket so it can be fuzzed alone. */
#include <string.h>

#include "master/admin.h"

admin_req_t admin_parse_request(const char *buf, size_t len)
{
    const char *nl = memchr(buf, '\n', len);
    if (nl == NULL)
        return len >= ADMIN_REQUEST_MAX - 1 ? ADMIN_REQ_TOO_LONG : ADMIN_REQ_NONE;
    size_t n = (size_t)(nl - buf);
    if (n > 0 && buf[n - 1] == '\r')
        n--;
#define IS(word) (n == sizeof(word) - 1 && memcmp(buf, word, n) == 0)
    if (IS("status"))
        return ADMIN_REQ_STATUS;
    if (IS("status --json"))
        return ADMIN_REQ_STATUS_JSON;
    if (IS("reload"))
        return ADMIN_REQ_RELOAD;
    if (IS("stop"))
        return ADMIN_REQ_STOP;
#undef IS
    return ADMIN_REQ_UNKNOWN;
}
