/*
 * Declared plugin options: the checks and parsers berthd applies to a plugin's
 * berth_option_t table (<berth/handler.h>), in libberth-util. berth-testhost uses them to
 * hand a plugin its options as the daemon would.
 */
#ifndef BERTH_OPTIONS_H
#define BERTH_OPTIONS_H

#include <stddef.h>

#include "berth/handler.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Is the table sound (types, offsets within `size`, enum choices, bounds, no name twice, every
 * default parses)? 0, or -EINVAL with why in err. A NULL table is sound. */
int berth_options_check_table(const berth_option_t *table, size_t size, char *err, size_t errlen);
/* One value of option `o` into `slot` (the member at o->offset). 0, or -EINVAL with a
 * message naming the key in err, or -ENOMEM. */
int berth_option_parse(const berth_option_t *o, const char *text, void *slot, char *err,
                       size_t errlen);
/* The entry for `key`, or NULL. */
const berth_option_t *berth_options_find(const berth_option_t *table, const char *key);
/* "integer 1..100", "enum none|password", ... for help texts. */
void berth_option_type_text(const berth_option_t *o, char *buf, size_t len);
/* Frees a parsed options struct (its CIDR lists, then itself). NULL is fine. */
void berth_options_free(const berth_option_t *table, void *opts);

#ifdef __cplusplus
}
#endif
#endif /* BERTH_OPTIONS_H */
