#include "core/control.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

int ctl_send(int fd, uint32_t type, const char *text)
{
    ctl_msg_t m;
    size_t n = text ? strnlen(text, CTL_TEXT_MAX - 1) : 0;
    m.type = type;
    m.len = (uint32_t)n;
    if (n)
        memcpy(m.text, text, n);
    m.text[n] = '\0';
    ssize_t w;
    do
        w = send(fd, &m, offsetof(ctl_msg_t, text) + n + 1, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    return w < 0 ? -errno : 0;
}
