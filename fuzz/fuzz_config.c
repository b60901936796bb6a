/*
 * libFuzzer target for the config parser (the files of daemon/config/, with lib/units.c and
 * lib/cidr.c).
 *
 * The input is a whole berth.conf, loaded with config_load_string() and includes turned off
 * (an include would let the fuzzer read any file on the machine). Checks the contract: a
 * config and no error, or no config and at least one error, each "FILE:LINE: message", sorted
 * by line, at most CONFIG_ERRORS_MAX of them and then one "... and N more errors"; and
 * that a config that loads holds together. ASan's leak check covers config_free().
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config/config.h"

#define NAME "fuzz.conf"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_config(const berth_config_t *cfg)
{
    check(cfg->workers >= 1 && cfg->workers <= BERTH_MAX_WORKERS);
    check(cfg->nfiles == 1 && strcmp(cfg->files[0], NAME) == 0);
    check(cfg->plugin_dir && cfg->admin && cfg->log);
    check(cfg->nlisteners <= BERTH_MAX_LISTENERS);
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const config_listener_t *l = &cfg->listeners[i];
        check(config_find_listener(cfg, l->name) == l);
        check(strcmp(config_protocol_name(l->protocol), "?") != 0);
        check(l->address && l->handler && l->plugin_path);
        check(l->addrlen > 0 && l->addrlen <= sizeof(l->addr));
        check(l->concurrency >= 1 && l->backlog >= 1 && l->mode <= 0777);
        check(l->file == cfg->files[0] && l->line > 0 && l->handler_line > l->line);
        for (size_t j = 0; j < l->noptions; j++)
            check(l->options[j].key[0] && l->options[j].value && l->options[j].line > l->line);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    int rc =
        config_load_string(NAME, (const char *)data, size, CONFIG_LOAD_NO_INCLUDE, &cfg, &errs);

    if (rc == 0) {
        check(cfg != NULL && errs.count == 0);
        check_config(cfg);
    } else {
        size_t kept = errs.count - (errs.more ? 1 : 0);
        long prev = -1;
        char more[64];

        check(rc == -EINVAL && cfg == NULL && errs.count > 0);
        /* The first CONFIG_ERRORS_MAX, by line, then one line counting the rest. */
        check(kept <= CONFIG_ERRORS_MAX && (errs.more == 0 || kept == CONFIG_ERRORS_MAX));
        for (size_t i = 0; i < kept; i++) {
            const char *m = errs.msgs[i];
            char *end;
            long line;
            check(strncmp(m, NAME ":", strlen(NAME ":")) == 0);
            line = strtol(m + strlen(NAME ":"), &end, 10);
            check(end[0] == ':' && end[1] == ' ' && line >= prev);
            prev = line;
        }
        if (errs.more) {
            snprintf(more, sizeof(more), "... and %zu more error%s", errs.more,
                     errs.more == 1 ? "" : "s");
            check(strcmp(errs.msgs[kept], more) == 0);
        }
    }
    config_free(cfg);
    config_errors_free(&errs);
    return 0;
}
