/*
 * escape: a plugin that tries, from handle(), what an attacker who took over a worker would
 * try, and answers each attempt with "ok" or "errno N": the worker sandbox's test plugin
 * (tests/integration/test_sandbox.py). One line per request:
 *   read PATH       open PATH for reading
 *   write PATH      create (or truncate) PATH and write to it
 *   connect PORT    a TCP connect() to 127.0.0.1:PORT
 *   bind            bind a TCP socket to 127.0.0.1:0
 *   exec            execve("/bin/sh")
 *   ptrace PID      PTRACE_ATTACH to PID (a sibling worker)
 *   pid             this worker's pid
 *   resolve NAME    getaddrinfo(NAME) for IPv4, through the system's resolver: "addr A.B.C.D"
 *                   or "gai N" (its EAI_ code)
 * Options: `dir = PATH` is declared read-write (as upload declares its folder), `read = PATH`
 * read-only, `connect = PORT` outbound.
 */
#include <berth/handler.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const berth_host_t *host;

static int escape_load(const berth_host_t *h)
{
    if (!BERTH_HOST_HAS(h, allow_bind))
        return -ENOTSUP;
    host = h;
    return 0;
}

static int escape_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                               size_t errlen)
{
    if ((strcmp(key, "dir") == 0 || strcmp(key, "read") == 0) && value[0] == '/')
        return 0;
    if (strcmp(key, "connect") == 0 && atoi(value) > 0)
        return 0;
    snprintf(err, errlen, "escape knows dir = /PATH, read = /PATH and connect = PORT");
    return -EINVAL;
}

static int escape_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    const char *v;
    int rc = 0;
    if ((v = host->option(l, "dir")) != NULL)
        rc = host->allow_path(l, v, BERTH_ACCESS_READ | BERTH_ACCESS_WRITE);
    if (rc == 0 && (v = host->option(l, "read")) != NULL)
        rc = host->allow_path(l, v, BERTH_ACCESS_READ);
    if (rc == 0 && (v = host->option(l, "connect")) != NULL)
        rc = host->allow_connect(l, atoi(v));
    if (rc)
        snprintf(err, errlen, "declaring %s: %s", v, strerror(-rc));
    *state = NULL;
    return rc;
}

static int try_read(const char *path)
{
    char buf[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int e = read(fd, buf, sizeof buf) < 0 ? errno : 0;
    close(fd);
    return e;
}

static int try_write(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    int e = write(fd, "escaped\n", 8) < 0 ? errno : 0;
    close(fd);
    return e;
}

static int try_socket(int port, int do_bind)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int rc = do_bind ? bind(fd, (struct sockaddr *)&sin, sizeof sin)
                     : connect(fd, (struct sockaddr *)&sin, sizeof sin);
    int e = rc < 0 ? errno : 0;
    close(fd);
    return e;
}

static int try_exec(void)
{
    char *const argv[] = {"sh", "-c", "exit 0", NULL};
    char *const envp[] = {NULL};
    execve("/bin/sh", argv, envp);
    return errno; /* only reached when execve failed */
}

static int try_ptrace(pid_t pid)
{
    if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) < 0)
        return errno;
    waitpid(pid, NULL, __WALL);
    ptrace(PTRACE_DETACH, pid, NULL, NULL);
    return 0;
}

static void escape_handle(berth_conn_t *conn, const void *data, size_t len)
{
    char line[512], reply[64];
    if (len >= sizeof line)
        len = sizeof line - 1;
    memcpy(line, data, len);
    line[len] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    char *arg = strchr(line, ' ');
    if (arg)
        *arg++ = '\0';
    int e;
    if (strcmp(line, "read") == 0 && arg)
        e = try_read(arg);
    else if (strcmp(line, "write") == 0 && arg)
        e = try_write(arg);
    else if (strcmp(line, "connect") == 0 && arg)
        e = try_socket(atoi(arg), 0);
    else if (strcmp(line, "bind") == 0)
        e = try_socket(0, 1);
    else if (strcmp(line, "exec") == 0)
        e = try_exec();
    else if (strcmp(line, "ptrace") == 0 && arg)
        e = try_ptrace((pid_t)atoi(arg));
    else if (strcmp(line, "resolve") == 0 && arg) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int g = getaddrinfo(arg, NULL, &hints, &res);
        char a[INET_ADDRSTRLEN] = "?";
        if (g == 0) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr, a,
                      sizeof a);
            freeaddrinfo(res);
            snprintf(reply, sizeof reply, "addr %s\n", a);
        } else {
            snprintf(reply, sizeof reply, "gai %d\n", g);
        }
        host->write(conn, reply, strlen(reply));
        return;
    } else if (strcmp(line, "pid") == 0) {
        snprintf(reply, sizeof reply, "%d\n", (int)getpid());
        host->write(conn, reply, strlen(reply));
        return;
    } else
        e = EINVAL;
    if (e)
        snprintf(reply, sizeof reply, "errno %d\n", e);
    else
        snprintf(reply, sizeof reply, "ok\n");
    host->write(conn, reply, strlen(reply));
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("escape"),
    .load = escape_load,
    .check_option = escape_check_option,
    .listener_open = escape_listener_open,
    .handle = escape_handle,
};
