/*
 * berthctl: talk to a running berthd through its admin socket.
 * Exit status: 0 done, 1 the daemon answered with an error (a failed reload), 64 usage,
 * 69 no daemon answers at that socket, 78 the config named with -c cannot be read.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "berthctl_top.h"
#include "config/config.h"

#define EXIT_ERROR 1
#define EXIT_USAGE EX_USAGE
#define EXIT_UNAVAILABLE EX_UNAVAILABLE
#define EXIT_CONFIG EX_CONFIG
#define ANSWER_MAX (4 * 1024 * 1024)

static void usage(FILE *f)
{
    fprintf(f,
            "usage: berthctl [-s SOCKET | -c CONFIG] [-t SECONDS] COMMAND\n"
            "commands:\n"
            "  status [--json]  listeners, workers, connections, bytes, reloads, uptime\n"
            "  reload           reload the configuration and plugins; waits and reports\n"
            "                   success or every error\n"
            "  stop             stop accepting, drain connections, exit\n"
            "  resume LISTENER  lift the quarantine of a listener whose plugin kept crashing\n"
            "  top              live view: per listener connections/s, bytes/s, errors; workers\n"
            "  status --watch N the same figures as lines, every N seconds\n"
            "  upgrade          re-execute the berthd binary at its path (same pid, no\n"
            "                   connection lost); waits until the new one serves or says why\n"
            "                   it was refused (exit status 1, the old one goes on serving)\n"
            "  plugins          each plugin the config names: its version, ABI and options\n"
            "                   (berthd --plugin-help; reads the config, not the daemon)\n"
            "options:\n"
            "  -s, --socket PATH   admin socket (default: $BERTH_ADMIN, or %s)\n"
            "  -c, --config FILE   take the admin socket from this config's [daemon] admin\n"
            "  -t, --timeout SECS  how long to wait for an answer (default 120)\n"
            "exit status: 0 ok, 1 the daemon reported an error, 64 usage, 69 no daemon,\n"
            "             78 unreadable config\n",
            BERTH_DEFAULT_ADMIN);
}

static int admin_from_config(const char *path, char **out)
{
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    if (config_load(path, &cfg, &errs)) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        config_errors_free(&errs);
        return -1;
    }
    *out = strdup(cfg->admin ? cfg->admin : "");
    config_free(cfg);
    return *out ? 0 : -1;
}

/* plugins: every plugin file the config names, described by `berthd --plugin-help` (the
 * only code that maps plugins is berthd's; berthctl never loads one). */
static int plugins_command(const char *conf)
{
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    if (config_load(conf, &cfg, &errs)) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        config_errors_free(&errs);
        return EXIT_CONFIG;
    }
    const char *berthd = getenv("BERTHD");
    if (berthd == NULL || berthd[0] == '\0')
        berthd = BERTH_BERTHD_PATH;
    int rc = 0;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const char *path = cfg->listeners[i].plugin_path;
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(cfg->listeners[k].plugin_path, path) == 0;
        if (seen)
            continue;
        printf("%s[", i ? "\n" : "");
        for (size_t k = i, n = 0; k < cfg->nlisteners; k++)
            if (strcmp(cfg->listeners[k].plugin_path, path) == 0)
                printf("%s%s", n++ ? "], [" : "", cfg->listeners[k].name);
        printf("]\n");
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            execl(berthd, berthd, "--plugin-help", path, "-c", conf, (char *)NULL);
            fprintf(stderr, "berthctl: cannot run %s: %s\n", berthd, strerror(errno));
            _exit(EX_UNAVAILABLE);
        }
        int status = 0;
        while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            rc = EXIT_ERROR;
    }
    config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, 'j'},
        {"watch", required_argument, NULL, 'w'},
        {NULL, 0, NULL, 0},
    };
    const char *sock = getenv("BERTH_ADMIN");
    char *from_cfg = NULL;
    const char *conf = BERTH_DEFAULT_CONF;
    long timeout = 120;
    int json = 0, c;
    long watch = 0; /* status --watch N */
    while ((c = getopt_long(argc, argv, "s:c:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            sock = optarg;
            break;
        case 'c':
            free(from_cfg);
            from_cfg = NULL;
            if (admin_from_config(optarg, &from_cfg))
                return EXIT_CONFIG;
            conf = optarg;
            sock = from_cfg;
            break;
        case 't':
            timeout = strtol(optarg, NULL, 10);
            if (timeout <= 0) {
                fprintf(stderr, "berthctl: bad timeout '%s'\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'j':
            json = 1;
            break;
        case 'w':
            watch = strtol(optarg, NULL, 10);
            if (watch <= 0 || watch > 86400) {
                fprintf(stderr, "berthctl: bad --watch interval '%s' (seconds, 1..86400)\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind++];
    const char *listener = NULL;
    if (strcmp(cmd, "plugins") == 0 && optind == argc && !json) {
        free(from_cfg);
        return plugins_command(conf);
    }
    if (strcmp(cmd, "resume") == 0) {
        if (optind >= argc || strlen(argv[optind]) == 0 || strlen(argv[optind]) > 63 ||
            strpbrk(argv[optind], " \t\r\n")) {
            fprintf(stderr, "berthctl: resume needs one listener name\n");
            return EXIT_USAGE;
        }
        listener = argv[optind++];
    }
    for (; optind < argc; optind++) {
        if (strcmp(argv[optind], "--json") == 0 || strcmp(argv[optind], "-j") == 0) {
            json = 1;
        } else {
            fprintf(stderr, "berthctl: unexpected argument '%s'\n", argv[optind]);
            return EXIT_USAGE;
        }
    }
    /* top and status --watch: berthctl_top.c, from successive status --json answers. */
    if (strcmp(cmd, "top") == 0 || (watch && strcmp(cmd, "status") == 0)) {
        if (json || (watch && strcmp(cmd, "top") == 0)) {
            fprintf(stderr, "berthctl: %s takes neither --json nor --watch\n", cmd);
            free(from_cfg);
            return EXIT_USAGE;
        }
        if (sock == NULL || sock[0] == '\0')
            sock = BERTH_DEFAULT_ADMIN;
        int trc =
            strcmp(cmd, "top") == 0 ? top_run(sock, timeout) : watch_run(sock, timeout, watch);
        free(from_cfg);
        return trc;
    }
    if (watch) {
        fprintf(stderr, "berthctl: --watch goes with status\n");
        return EXIT_USAGE;
    }
    char request[96];
    if (strcmp(cmd, "status") == 0)
        snprintf(request, sizeof request, "status%s\n", json ? " --json" : "");
    else if ((strcmp(cmd, "reload") == 0 || strcmp(cmd, "stop") == 0) && !json)
        snprintf(request, sizeof request, "%s\n", cmd);
    else if (strcmp(cmd, "upgrade") == 0 && !json) /* binary upgrade: waits for the outcome */
        snprintf(request, sizeof request, "upgrade\n");
    else if (listener && !json)
        snprintf(request, sizeof request, "resume %s\n", listener);
    else {
        fprintf(stderr, "berthctl: unknown command '%s'%s\n", cmd,
                json ? " (--json goes with status)" : "");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (sock == NULL || sock[0] == '\0')
        sock = BERTH_DEFAULT_ADMIN;

    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(sock) >= sizeof sun.sun_path) {
        fprintf(stderr, "berthctl: socket path too long: %s\n", sock);
        return EXIT_USAGE;
    }
    strcpy(sun.sun_path, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        int e = errno;
        fprintf(stderr, "berthctl: cannot reach berthd at %s: %s\n", sock, strerror(e));
        free(from_cfg);
        return EXIT_UNAVAILABLE;
    }
    struct timeval tv = {.tv_sec = timeout};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (send(fd, request, strlen(request), MSG_NOSIGNAL) < 0) {
        int e = errno;
        fprintf(stderr, "berthctl: %s: %s\n", sock, strerror(e));
        close(fd);
        free(from_cfg);
        return EXIT_UNAVAILABLE;
    }
    char *answer = malloc(ANSWER_MAX + 1);
    size_t len = 0;
    ssize_t n = 0;
    int e = 0;
    while (answer && len < ANSWER_MAX && (n = recv(fd, answer + len, ANSWER_MAX - len, 0)) > 0)
        len += (size_t)n;
    if (n < 0)
        e = errno;
    close(fd);
    int rc;
    if (answer == NULL || n < 0) {
        fprintf(stderr, "berthctl: no answer from %s: %s\n", sock,
                n < 0 && (e == EAGAIN || e == EWOULDBLOCK) ? "timed out" : strerror(e));
        rc = EXIT_UNAVAILABLE;
    } else {
        answer[len] = '\0';
        char *body = strchr(answer, '\n');
        body = body ? body + 1 : answer + len;
        int ok = strncmp(answer, "ok\n", 3) == 0;
        if (ok) {
            fputs(body, stdout);
            rc = 0;
        } else if (strncmp(answer, "error\n", 6) == 0) {
            fprintf(stderr, "berthctl: %s failed:\n%s", cmd, body);
            rc = EXIT_ERROR;
        } else {
            fprintf(stderr, "berthctl: unexpected answer from %s\n", sock);
            rc = EXIT_UNAVAILABLE;
        }
    }
    free(answer);
    free(from_cfg);
    return rc;
}
