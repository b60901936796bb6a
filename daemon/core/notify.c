#include "core/notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#ifdef BERTH_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#define NOTIFY(...) sd_notifyf(0, __VA_ARGS__)
#else
/* Without libsystemd at build time there is no one to tell. */
#define NOTIFY(...) ((void)0)
#endif

void notify_ready(void)
{
    NOTIFY("READY=1");
}

void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    NOTIFY("RELOADING=1\nMONOTONIC_USEC=%llu",
           (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u);
    (void)ts;
}

void notify_stopping(void)
{
    NOTIFY("STOPPING=1");
}

void notify_status(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    NOTIFY("STATUS=%s", buf);
    (void)buf;
}
