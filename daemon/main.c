/*
 * berthd: command line. Exit codes a script or systemd can act on:
 *   0 ok, 64 usage, 71 system failure, 78 configuration error.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "master.h"
#include "worker.h"

#define EXIT_USAGE 64
#define EXIT_SYSTEM 71
#define EXIT_CONFIG 78

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

/* -t: everything a start would check, plugins included, without binding anything. */
static int test_config(const char *path)
{
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    int rc = config_load(path, &cfg, &errs);
    if (rc == 0) {
        log_init("berthd -t", BERTH_LOG_WARN, 0);
        worker_t w;
        memset(&w, 0, sizeof w);
        w.cfg = cfg;
        rc = worker_prepare(&w, &errs);
        worker_release(&w);
    }
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    if (rc == 0)
        printf("%s: configuration OK (%zu listener%s)\n", path, cfg->nlisteners,
               cfg->nlisteners == 1 ? "" : "s");
    else if (errs.count)
        fprintf(stderr, "%s: %zu error%s\n", path, errs.count, errs.count == 1 ? "" : "s");
    config_errors_free(&errs);
    config_free(cfg);
    return rc == 0 ? 0 : EXIT_CONFIG;
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
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "berthd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (test)
        return test_config(path);
    return master_run(path);
}
