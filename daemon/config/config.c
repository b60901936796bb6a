/*
 * berth.conf: INI text into an immutable berth_config_t. The public entry points; the work is
 * done by reader.c (lines, sections, includes), keys.c (what each key means), address.c and
 * errors.c (see parse.h).
 *
 * Plugin paths are resolved after everything is read, because plugin_dir may come after the
 * listeners or from an include.
 */
#include "config/parse.h"
#include "config/tls.h"
#include "core/limits.h"
#include "core/log.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SHUTDOWN_TIMEOUT (30u * 1000u)

/* ---- the whole config ------------------------------------------------------------------ */

static unsigned cpu_count(void)
{
    cpu_set_t set;
    long n = 0;

    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > BERTH_MAX_WORKERS)
        n = BERTH_MAX_WORKERS;
    return (unsigned)n;
}

/* What could only be done once everything was read. */
static void finish(struct parse *p)
{
    berth_config_t *cfg = p->cfg;
    struct stat st;

    if (cfg->workers_auto)
        cfg->workers = cpu_count();
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        config_listener_t *l = &cfg->listeners[i];
        const char *problem = NULL;

        if (!l->handler)
            continue;
        if (strchr(l->handler, '/')) {
            char *dir = parse_dir_of(l->file);
            if (dir)
                l->plugin_path = parse_path_in(p, dir, l->handler);
            else
                p->nomem = 1;
            free(dir);
        } else if (!p->plugin_dir_bad) {
            if (asprintf(&l->plugin_path, "%s/%s.so", cfg->plugin_dir, l->handler) < 0) {
                l->plugin_path = NULL;
                p->nomem = 1;
            }
        }
        if (!l->plugin_path)
            continue;
        if (stat(l->plugin_path, &st) < 0)
            problem = strerror(errno);
        else if (!S_ISREG(st.st_mode))
            problem = "not a regular file";
        if (problem)
            parse_error_at(p, l->file, l->handler_line, "handler '%s': %s: %s", l->handler,
                           l->plugin_path, problem);
    }
}

static berth_config_t *config_new(void)
{
    berth_config_t *cfg = calloc(1, sizeof(*cfg));

    if (!cfg)
        return NULL;
    cfg->workers_auto = 1;
    cfg->log_level = BERTH_LOG_INFO;
    cfg->shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
    cfg->per_source_table = LIMITS_DEFAULT_TABLE;
    cfg->plugin_dir = strdup(BERTH_DEFAULT_PLUGIN_DIR);
    cfg->admin = strdup(BERTH_DEFAULT_ADMIN);
    cfg->log = strdup("stderr");
    if (!cfg->plugin_dir || !cfg->admin || !cfg->log) {
        config_free(cfg);
        cfg = NULL;
    }
    return cfg;
}

static int load(const char *name, const char *text, size_t len, unsigned flags,
                berth_config_t **out, config_errors_t *errs)
{
    struct parse p = {.errs = errs, .flags = flags};
    int rc = -EINVAL;

    if (out)
        *out = NULL;
    if (!name || !out)
        goto out;
    p.cfg = config_new();
    if (!p.cfg || !(p.cfg->path = strdup(name))) {
        rc = -ENOMEM;
        goto out;
    }
    if (text)
        reader_read_string(&p, name, text, len);
    else
        reader_read_file(&p, name, 0, NULL);
    finish(&p);
    if (p.nomem) {
        rc = -ENOMEM;
    } else if (p.nerrors == 0) {
        *out = p.cfg;
        p.cfg = NULL;
        rc = 0;
    }
out:
    parse_errors_finish(&p);
    config_free(p.cfg);
    free(p.ls);
    return rc;
}

int config_load(const char *path, berth_config_t **out, config_errors_t *errs)
{
    return load(path, NULL, 0, 0, out, errs);
}

int config_load_string(const char *name, const char *text, size_t len, unsigned flags,
                       berth_config_t **out, config_errors_t *errs)
{
    if (!text)
        return -EINVAL;
    return load(name, text, len, flags, out, errs);
}

void config_free(berth_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        config_listener_t *l = &cfg->listeners[i];
        free(l->name);
        free(l->address);
        free(l->handler);
        free(l->plugin_path);
        berth_cidr_list_free(&l->allow);
        berth_cidr_list_free(&l->deny);
        config_tls_free(l->tls);
        berth_cidr_list_free(&l->proxy_from);
        for (size_t j = 0; j < l->noptions; j++) {
            free(l->options[j].key);
            free(l->options[j].value);
        }
        free(l->options);
    }
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->nfiles; i++)
        free(cfg->files[i]);
    free(cfg->files);
    free(cfg->path);
    free(cfg->user);
    free(cfg->plugin_dir);
    free(cfg->admin);
    free(cfg->log);
    free(cfg->agent);
    free(cfg->metrics);
    free(cfg);
}

const config_listener_t *config_find_listener(const berth_config_t *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

const char *config_protocol_name(berth_protocol_t p)
{
    switch (p) {
    case BERTH_PROTO_TCP:
        return "tcp";
    case BERTH_PROTO_UDP:
        return "udp";
    case BERTH_PROTO_UNIX:
        return "unix";
    case BERTH_PROTO_UNIXGRAM:
        return "unixgram";
    }
    return "?";
}
