/*
 * crashy: echoes, except that a line "crash" makes the worker segfault and "abort" makes it
 * abort(): the plugin crash a worker must contain. Everything else is echoed back as is.
 * Option `crash_open_if = PATH`: listener_open segfaults while PATH exists (a worker that
 * crashes before it is ready, for the respawn backoff). Option `crash_in = check_option`:
 * check_option segfaults on that key. load() segfaults while the file named by the
 * environment's CRASHY_LOAD_IF exists (load runs before any option is known): the crash
 * `berthd -t` and a reload must name as "crashy.so load()".
 */
#include <berth/handler.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const berth_host_t *host;

static void segfault(void);

static int crashy_load(const berth_host_t *h)
{
    const char *flag = getenv("CRASHY_LOAD_IF");
    if (flag != NULL && access(flag, F_OK) == 0)
        segfault();
    host = h;
    return 0;
}

static void segfault(void)
{
    /* A real fault, not raise(): the way a buggy plugin takes a worker down. */
    volatile int *volatile p = NULL;
    *p = 42;
    raise(SIGSEGV); /* if the store was somehow survived */
}

static int crashy_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                               size_t errlen)
{
    if (strcmp(key, "crash_open_if") == 0 && value[0] == '/')
        return 0;
    if (strcmp(key, "crash_in") == 0 && strcmp(value, "check_option") == 0)
        segfault();
    snprintf(err, errlen, "%s: unknown key (crashy knows crash_open_if = /PATH)", key);
    return -EINVAL;
}

static int crashy_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    const char *path = host->option(l, "crash_open_if");
    if (path != NULL && access(path, F_OK) == 0)
        segfault();
    *state = NULL;
    return 0;
}

static int starts_with(const void *data, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(data, word, n) == 0;
}

static void crashy_handle(berth_conn_t *conn, const void *data, size_t len)
{
    if (starts_with(data, len, "crash"))
        segfault();
    if (starts_with(data, len, "abort"))
        abort();
    if (host->write(conn, data, len) < 0)
        host->abort(conn);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("crashy"),
    .load = crashy_load,
    .check_option = crashy_check_option,
    .listener_open = crashy_listener_open,
    .handle = crashy_handle,
};
