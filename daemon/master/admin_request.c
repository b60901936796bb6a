/* The admin request line, parsed apart from any socket so it can be fuzzed alone. */
#include <string.h>

#include "master/admin.h"

admin_req_t admin_parse_request(const char *buf, size_t len, const char **arg, size_t *arglen)
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
    if (IS("upgrade"))
        return ADMIN_REQ_UPGRADE;
#undef IS
    static const char resume[] = "resume ";
    if (n > sizeof resume - 1 && memcmp(buf, resume, sizeof resume - 1) == 0) {
        const char *name = buf + sizeof resume - 1;
        size_t nlen = n - (sizeof resume - 1);
        if (nlen > 63)
            return ADMIN_REQ_UNKNOWN;
        for (size_t i = 0; i < nlen; i++)
            if ((unsigned char)name[i] <= ' ' || name[i] == 0x7f)
                return ADMIN_REQ_UNKNOWN;
        if (arg)
            *arg = name;
        if (arglen)
            *arglen = nlen;
        return ADMIN_REQ_RESUME;
    }
    return ADMIN_REQ_UNKNOWN;
}
