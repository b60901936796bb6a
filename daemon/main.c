/*
 * berthd: command line. Exit codes a script or systemd can act on:
 *   0 ok, 64 usage, 71 system failure, 78 configuration error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "config/config.h"
#include "config/plugin_opts.h"
#include "config/tls.h"
#include "core/log.h"
#include "master/handover.h"
#include "master/master.h"
#include "core/stats.h"
#include "master/privs.h"
#include "worker/host.h"
#include "worker/loader.h"
#include "worker/worker.h"
#include "worker/sandbox.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: berthd [-c FILE] [-t] [-V] [-h] [--plugin-help NAME]\n"
            "  -c, --config FILE  configuration file (default %s)\n"
            "  -t, --test         check the configuration (syntax, values, plugins and their\n"
            "                     options), print every error as FILE:LINE: message, and exit\n"
            "  -V, --version      print the version and the plugin ABI version\n"
            "  --plugin-help NAME print plugin NAME's version, ABI and options (NAME: a plugin\n"
            "                     in the config's plugin_dir, or a path to a .so)\n"
            "  -h, --help         this help\n"
            "Runs in the foreground until SIGTERM or SIGINT; SIGHUP reloads the configuration;\n"
            "SIGUSR2 upgrades: re-executes the berthd binary at its path (berthctl upgrade).\n"
            "Exit status: 0 ok, 64 usage, 71 system failure, 78 configuration error.\n",
            BERTH_DEFAULT_CONF);
}

/* Load the plugins and run their checks as a worker would. `st` (shared with the parent)
 * records which listener and hook runs, so a crash there can be named. */
static int prepare_plugins(const berth_config_t *cfg, config_errors_t *errs, stats_worker_t *st)
{
    worker_t w;
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    int *slots = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof *slots);
    for (size_t i = 0; slots && i < cfg->nlisteners; i++)
        slots[i] = (int)i; /* under -t a listener's "slot" is its index */
    if (slots && st) {
        w.st = st;
        w.listen_slots = slots;
    }
    int rc = worker_prepare(&w, errs);
    worker_release(&w);
    free(slots);
    return rc;
}

/* A check that died: name the plugin and hook the child recorded, at the listener's handler
 * line, as a worker's crash is named in the log. */
static void report_crash(const berth_config_t *cfg, const stats_worker_t *st, int status,
                         config_errors_t *errs)
{
    int hook = atomic_load(&st->cur_hook);
    int lk = atomic_load(&st->cur_listener);
    const char *hname = hook != STATS_HOOK_NONE ? stats_hook_name(hook) : NULL;
    char how[96];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "signal %d, %s", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
    if (lk < 0 || (size_t)lk >= cfg->nlisteners || hname == NULL || hname[0] == '\0') {
        config_errors_add(errs, cfg->path, 0, "the plugin check crashed (%s) in host code", how);
        return;
    }
    const config_listener_t *l = &cfg->listeners[lk];
    const char *file = strrchr(l->plugin_path, '/');
    file = file ? file + 1 : l->plugin_path;
    config_errors_add(errs, l->file, l->handler_line,
                      "handler '%s': the plugin crashed (%s) in %s %s, checking [%s]", l->handler,
                      how, file, hname, l->name);
}

/* The plugins' checks run in a child the parent watches: a plugin that crashes in load(),
 * check_option or listener_open fails the check with its name and hook instead of taking
 * berthd -t down without a word. As root with `user` set, the child drops to `user` first,
 * as a worker does: a folder or file only root could open must fail here, not in the
 * workers. The child's errors come back one per line over a pipe. */
static int prepare_plugins_watched(const berth_config_t *cfg, config_errors_t *errs)
{
    int drop = geteuid() == 0 && cfg->user != NULL && strcmp(cfg->user, "root") != 0;
    stats_worker_t *st =
        mmap(NULL, sizeof *st, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (st == MAP_FAILED) {
        int e = errno;
        config_errors_add(errs, cfg->path, 0, "mmap: %s", strerror(e));
        return -e;
    }
    atomic_store(&st->cur_listener, -1);
    atomic_store(&st->cur_hook, STATS_HOOK_NONE);
    int fds[2];
    if (pipe(fds) < 0) {
        int e = errno;
        config_errors_add(errs, cfg->path, 0, "pipe: %s", strerror(e));
        munmap(st, sizeof *st);
        return -e;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        config_errors_add(errs, cfg->path, 0, "fork: %s", strerror(e));
        close(fds[0]);
        close(fds[1]);
        munmap(st, sizeof *st);
        return -e;
    }
    if (pid == 0) {
        close(fds[0]);
        config_errors_t mine = {0};
        char why[512];
        int rc = drop ? privileges_drop(cfg, why, sizeof why) : 0;
        if (rc)
            config_errors_add(&mine, cfg->path, 0, "%s", why);
        else
            rc = prepare_plugins(cfg, &mine, st);
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
    int rc = 0;
    /* Left in a plugin hook: it died there (a signal, or a sanitizer's exit). */
    if (WIFSIGNALED(status) || atomic_load(&st->cur_hook) != STATS_HOOK_NONE) {
        report_crash(cfg, st, status, errs);
        rc = -EINVAL;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (errs->count == 0 && drop)
            config_errors_add(errs, cfg->path, 0, "the plugin check as user '%s' failed",
                              cfg->user);
        else if (errs->count == 0)
            config_errors_add(errs, cfg->path, 0, "the plugin check failed (exit status %d)",
                              WEXITSTATUS(status));
        rc = -EINVAL;
    }
    munmap(st, sizeof *st);
    return rc;
}

/* --plugin-help NAME: a plugin's name, version, ABI and declared options. NAME is a path
 * (with a '/') or a plugin in the config's plugin_dir (the default plugin_dir when the config
 * cannot be read). */
static int plugin_help(const char *name, const char *conf)
{
    char path[4096];
    if (strchr(name, '/')) {
        snprintf(path, sizeof path, "%s", name);
    } else {
        berth_config_t *cfg = NULL;
        config_errors_t errs = {0};
        const char *dir = BERTH_DEFAULT_PLUGIN_DIR;
        if (config_load(conf, &cfg, &errs) == 0 && cfg->plugin_dir)
            dir = cfg->plugin_dir;
        size_t n = strlen(name);
        int has_so = n > 3 && strcmp(name + n - 3, ".so") == 0;
        snprintf(path, sizeof path, "%s/%s%s", dir, name, has_so ? "" : ".so");
        config_errors_free(&errs);
        config_free(cfg);
    }
    log_init("berthd --plugin-help", BERTH_LOG_WARN, 0);
    plugin_t *p = NULL;
    char err[1024];
    if (plugin_open(path, &berth_host_table, &p, err, sizeof err)) {
        fprintf(stderr, "berthd: %s\n", err);
        return EX_CONFIG;
    }
    printf("%s %s (plugin ABI %u, descriptor %u bytes)\n", p->desc.name,
           p->desc.version ? p->desc.version : "(no version)", p->desc.abi_version, p->desc.size);
    printf("file: %s\n", p->path);
    printf("options:\n");
    plugin_opts_describe(p->desc.options, stdout);
    if (p->desc.check_option)
        printf("the plugin checks %s itself (check_option)\n",
               p->desc.options ? "further keys and values" : "its keys");
    plugin_close(p);
    return EX_OK;
}

/* -t: everything a start would check, plugins included, without binding anything. */
static int test_config(const char *path)
{
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    int rc = config_load_with_tls(path, &cfg, &errs);
    if (rc == 0) {
        log_init("berthd -t", BERTH_LOG_WARN, 0);
        rc = prepare_plugins_watched(cfg, &errs);
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

/* --handover-check FD: run by a master before it executes this binary for a binary upgrade.
 * Can this binary read the handover the running one writes (format, counters layout), and
 * does the config check as with -t? Exits 0, or 78 with the reasons on stderr. */
static int upgrade_check(const char *path, const char *fdarg)
{
    static handover_t h;
    char err[512];
    char *end;
    long fd = strtol(fdarg, &end, 10);
    if (*end || fd < 0 || fd > 1 << 20) {
        fprintf(stderr, "berthd: --handover-check: bad descriptor '%s'\n", fdarg);
        return EX_USAGE;
    }
    if (handover_read((int)fd, &h, err, sizeof err)) {
        fprintf(stderr, "berthd %s cannot take over: %s\n", BERTH_VERSION, err);
        return EX_CONFIG;
    }
    if (h.stats_size != sizeof(stats_t)) {
        fprintf(stderr,
                "berthd %s cannot take over from %s: the counters have another layout (%zu "
                "bytes, %zu here); restart instead\n",
                BERTH_VERSION, h.from, h.stats_size, sizeof(stats_t));
        return EX_CONFIG;
    }
#ifdef BERTH_UPGRADE_TEST_HOOKS
    /* Test builds only (docs/upgrade.md): a check that fails after reading the handover. */
    const char *fail = getenv("BERTH_TEST_UPGRADE_CHECK_FAIL");
    if (fail && *fail) {
        fprintf(stderr, "%s\n", fail);
        return EX_SOFTWARE;
    }
#endif
    return test_config(path);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {"plugin-help", required_argument, NULL, 'P'},
        /* binary upgrade, not for people: see master/upgrade.h */
        {"handover", required_argument, NULL, 'H'},
        {"handover-check", required_argument, NULL, 'K'},
        {NULL, 0, NULL, 0},
    };
    const char *handover = NULL, *handover_check = NULL;
    const char *path = BERTH_DEFAULT_CONF;
    int test = 0;
    const char *help_plugin = NULL;
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
        case 'H':
            handover = optarg;
            break;
        case 'K':
            handover_check = optarg;
            break;
        case 'P':
            help_plugin = optarg;
            break;
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
    if (help_plugin)
        return plugin_help(help_plugin, path);
    if (handover_check)
        return upgrade_check(path, handover_check);
    if (test)
        return test_config(path);
    if (handover) {
        char *end;
        long fd = strtol(handover, &end, 10);
        if (*end || fd < 0 || fd > 1 << 20) {
            fprintf(stderr, "berthd: --handover: bad descriptor '%s'\n", handover);
            return EX_USAGE;
        }
        return master_run_handover(path, (int)fd);
    }
    return master_run(path);
}
