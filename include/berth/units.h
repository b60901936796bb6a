/* Durations and sizes as the config writes them. */
#ifndef BERTH_UNITS_H
#define BERTH_UNITS_H

#include <stdint.h>

/* "250ms", "30s", "5m", "1h", "2d"; a bare number is seconds. 0 or -EINVAL (also on overflow
 * or a negative value). */
int berth_parse_duration(const char *text, uint64_t *ms);
/* "512", "64K", "10M", "2G", "1T" (powers of 1024; "KiB"/"kb" spellings accepted). 0 or -EINVAL. */
int berth_parse_size(const char *text, uint64_t *bytes);
/* yes/no, true/false, on/off, 1/0. 0 or -EINVAL. */
int berth_parse_bool(const char *text, int *value);

#endif
