#include "config/plugin_opts.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "berth/cidr.h"
#include "berth/options.h"
#include "berth/units.h"

void plugin_opts_type_text(const berth_option_t *o, char *buf, size_t len)
{
    berth_option_type_text(o, buf, len);
}

int plugin_opts_check_table(const berth_option_t *table, size_t size, char *err, size_t errlen)
{
    return berth_options_check_table(table, size, err, errlen);
}

const berth_option_t *plugin_opts_find(const berth_option_t *table, const char *key)
{
    return berth_options_find(table, key);
}

void plugin_opts_names(const berth_option_t *table, char *buf, size_t len)
{
    if (table == NULL || table->name == NULL) {
        snprintf(buf, len, "takes no options");
        return;
    }
    size_t off = (size_t)snprintf(buf, len, "takes:");
    for (const berth_option_t *o = table; o->name && off < len; o++)
        off += (size_t)snprintf(buf + off, len - off, "%s %s", o == table ? "" : ",", o->name);
}

void plugin_opts_free(const berth_option_t *table, void *opts)
{
    berth_options_free(table, opts);
}

int plugin_opts_parse(const berth_option_t *table, size_t size, const char *plugin,
                      const config_listener_t *lc, void **out, config_errors_t *errs)
{
    int failed = 0;
    char err[512];
    *out = NULL;
    void *opts = calloc(1, size ? size : 1);
    if (opts == NULL) {
        config_errors_add(errs, lc->file, lc->line, "[%s]: out of memory", lc->name);
        return -ENOMEM;
    }
    for (const berth_option_t *o = table; o && o->name; o++) {
        const config_option_t *given = NULL;
        for (size_t k = 0; k < lc->noptions; k++)
            if (strcmp(lc->options[k].key, o->name) == 0)
                given = &lc->options[k]; /* the last one wins, as in the reader */
        const char *text = given ? given->value : o->def;
        if (text == NULL) {
            if (o->flags & BERTH_OPT_REQUIRED) {
                config_errors_add(errs, lc->file, lc->line,
                                  "[%s]: %s is required by plugin '%s' (%s)", lc->name, o->name,
                                  plugin, o->help ? o->help : "no help");
                failed = 1;
            }
            continue;
        }
        int rc = berth_option_parse(o, text, (char *)opts + o->offset, err, sizeof err);
        if (rc == 0)
            continue;
        if (given)
            config_errors_add(errs, given->file, given->line, "%s", err);
        else
            config_errors_add(errs, lc->file, lc->line, "[%s]: plugin '%s' default: %s", lc->name,
                              plugin, err);
        failed = 1;
        if (rc == -ENOMEM)
            break;
    }
    if (failed) {
        plugin_opts_free(table, opts);
        return -EINVAL;
    }
    *out = opts;
    return 0;
}

void plugin_opts_describe(const berth_option_t *table, FILE *f)
{
    if (table == NULL || table->name == NULL) {
        fprintf(f, "  (no declared options)\n");
        return;
    }
    size_t w = 4;
    for (const berth_option_t *o = table; o->name; o++)
        if (strlen(o->name) > w)
            w = strlen(o->name);
    for (const berth_option_t *o = table; o->name; o++) {
        char t[256];
        plugin_opts_type_text(o, t, sizeof t);
        fprintf(f, "  %-*s  %s", (int)w, o->name, t);
        if (o->flags & BERTH_OPT_REQUIRED)
            fprintf(f, ", required");
        else if (o->def)
            fprintf(f, ", default %s", o->def[0] ? o->def : "\"\"");
        else
            fprintf(f, ", no default");
        fprintf(f, "\n  %-*s  %s\n", (int)w, "", o->help ? o->help : "");
    }
}
