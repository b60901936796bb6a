/*
 * berthd: command line. Exit codes a script or systemd can act on:
 *   0 ok, 64 usage, 71 system failure, 78 configuration error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "config/config.h"
#include "config/tls.h"
#include "core/log.h"
#include "master/master.h"
#include "master/privs.h"
#include "worker/worker.h"
#include "worker/sandbox.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: berthd [-c FILE] [-t] [-V] [-h]\n"
            "  -c, --config FILE  configuration file (default %s)\n"
            "  -t, --test         check the configuration (syntax, values, plugins and their\n"
            "                     options), print every error as FILE:LINE: message, and exit\n"
            "  -V, --version      print the version and the plugin ABI version\n"
            "  -h, --help         this help\n"
            "Runs in the foreground until SIGTERM or SIGINT; SIGHUP reloads the configuration.\n"
            "Exit status: 0 ok, 64 usage, 71 system failure, 78 configuration error.\n",
            BERTH_DEFAULT_CONF);
}

/* Load the plugins and run their checks as a worker would. */
static int prepare_plugins(const berth_config_t *cfg, config_errors_t *errs)
{
    worker_t w;
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    int rc = worker_prepare(&w, errs);
    worker_release(&w);
    return rc;
}

/* As root with `user` set, the plugins' checks run in a child that dropped to `user`, as a
 * worker's do: a folder or file only root could open must fail here, not in the workers.
 * The child's errors come back one per line over a pipe. */
static int prepare_plugins_as_user(const berth_config_t *cfg, config_errors_t *errs)
{
    if (geteuid() != 0 || cfg->user == NULL || strcmp(cfg->user, "root") == 0)
        return prepare_plugins(cfg, errs);
    int fds[2];
    if (pipe(fds) < 0) {
        int e = errno;
        config_errors_add(errs, cfg->path, 0, "pipe: %s", strerror(e));
        return -e;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        config_errors_add(errs, cfg->path, 0, "fork: %s", strerror(e));
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    if (pid == 0) {
        close(fds[0]);
        config_errors_t mine = {0};
        char why[512];
        int rc = privileges_drop(cfg, why, sizeof why);
        if (rc)
            config_errors_add(&mine, cfg->path, 0, "%s", why);
        else
            rc = prepare_plugins(cfg, &mine);
        FILE *out = fdopen(fds[1], "w");
        for (size_t i = 0; out && i < mine.count; i++)
            fprintf(out, "%s\n", mine.msgs[i]);
        if (out)
            fclose(out);
        config_errors_free(&mine);
        _exit(rc ? 1 : 0);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    char line[4096];
    while (in && fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = '\0';
        config_errors_add(errs, NULL, -1, "%s", line);
    }
    if (in)
        fclose(in);
    else
        close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (errs->count == 0)
        config_errors_add(errs, cfg->path, 0, "the plugin check as user '%s' failed", cfg->user);
    return -EINVAL;
}

/* -t: everything a start would check, plugins included, without binding anything. */
static int test_config(const char *path)
{
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    int rc = config_load_with_tls(path, &cfg, &errs);
    if (rc == 0) {
        log_init("berthd -t", BERTH_LOG_WARN, 0);
        rc = prepare_plugins_as_user(cfg, &errs);
    }
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    if (rc == 0) {
        char sandbox[300];
        sandbox_describe(cfg, sandbox, sizeof sandbox);
        printf("%s: configuration OK (%zu listener%s)\n%s\n", path, cfg->nlisteners,
               cfg->nlisteners == 1 ? "" : "s", sandbox);
    } else if (errs.count)
        fprintf(stderr, "%s: %zu error%s\n", path, config_errors_total(&errs),
                config_errors_total(&errs) == 1 ? "" : "s");
    config_errors_free(&errs);
    config_free(cfg);
    return rc == 0 ? EX_OK : EX_CONFIG;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = BERTH_DEFAULT_CONF;
    int test = 0;
    int c;
    while ((c = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'V':
            printf("berthd %s (plugin ABI %u)\n", BERTH_VERSION, BERTH_ABI_VERSION);
            return EX_OK;
        case 'h':
            usage(stdout);
            return EX_OK;
        default:
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "berthd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EX_USAGE;
    }
    if (test)
        return test_config(path);
    return master_run(path);
}
