/*
 * A plugin's declared options (berth_handler_t.options): the table checked for sense, a
 * listener section's values parsed into the plugin's struct with FILE:LINE errors, and the
 * table described for `berthd --plugin-help`. Runtime code never sees the option text again.
 */
#ifndef BERTH_PLUGIN_OPTS_H
#define BERTH_PLUGIN_OPTS_H

#include <stddef.h>
#include <stdio.h>

#include "berth/handler.h"
#include "config/config.h"

/* Is the table itself sound (types known, offsets inside `size`, enums with choices, bounds
 * in order, defaults that parse)? 0, or -EINVAL with one line in err naming the option. A
 * table is checked before any listener's values are parsed against it. */
int plugin_opts_check_table(const berth_option_t *table, size_t size, char *err, size_t errlen);

/* The entry for `key`, or NULL. */
const berth_option_t *plugin_opts_find(const berth_option_t *table, const char *key);

/* "takes: a, b, c" or "takes no options", for an unknown key's message. */
void plugin_opts_names(const berth_option_t *table, char *buf, size_t len);

/* Parse listener `lc`'s values (and defaults) for `table` into a new zeroed struct of `size`
 * bytes in *out. Each bad value is reported at its FILE:LINE, a missing required option at the
 * section's line; keys not in the table are left alone (they go to check_option). Returns 0,
 * -EINVAL (every error reported) or -ENOMEM. *out is set only on success; release it with
 * plugin_opts_free. */
int plugin_opts_parse(const berth_option_t *table, size_t size, const char *plugin,
                      const config_listener_t *lc, void **out, config_errors_t *errs);
void plugin_opts_free(const berth_option_t *table, void *opts);

/* "  NAME  TYPE  default D  help" lines, for --plugin-help and berthctl plugins. */
void plugin_opts_describe(const berth_option_t *table, FILE *f);
/* "duration 1s..1h", "enum none|password", "size", ... for one option. */
void plugin_opts_type_text(const berth_option_t *o, char *buf, size_t len);

#endif
