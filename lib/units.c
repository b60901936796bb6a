/* Durations, sizes and booleans as the config (and plugins, through the host table) write
 * them. Strict on purpose: no signs, no spaces, no fractions, overflow is an error. */
#include "berth/units.h"

#include <errno.h>
#include <stddef.h>
#include <strings.h>

struct unit {
    const char *suffix;
    uint64_t factor;
};

/* Leading decimal digits of `text` into *value; *rest points past them. At least one digit,
 * no sign (strtoull would quietly accept "-1"). */
static int parse_digits(const char *text, uint64_t *value, const char **rest)
{
    uint64_t v = 0;
    const char *p = text;
    int rc = -EINVAL;

    if (*p < '0' || *p > '9')
        goto out;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            goto out;
        v = v * 10 + d;
    }
    *value = v;
    *rest = p;
    rc = 0;
out:
    return rc;
}

static int parse_with_units(const char *text, const struct unit *units, size_t nunits,
                            uint64_t *result)
{
    uint64_t n = 0;
    const char *suffix = NULL;
    int rc = -EINVAL;

    if (!text || !result || parse_digits(text, &n, &suffix) < 0)
        goto out;
    for (size_t i = 0; i < nunits; i++) {
        if (strcasecmp(suffix, units[i].suffix) != 0)
            continue;
        if (n > UINT64_MAX / units[i].factor)
            goto out;
        *result = n * units[i].factor;
        rc = 0;
        break;
    }
out:
    return rc;
}

int berth_parse_duration(const char *text, uint64_t *ms)
{
    static const struct unit units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    return parse_with_units(text, units, sizeof(units) / sizeof(units[0]), ms);
}

int berth_parse_size(const char *text, uint64_t *bytes)
{
    static const struct unit units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1ull << 10},
        {"kb", 1ull << 10},
        {"kib", 1ull << 10},
        {"m", 1ull << 20},
        {"mb", 1ull << 20},
        {"mib", 1ull << 20},
        {"g", 1ull << 30},
        {"gb", 1ull << 30},
        {"gib", 1ull << 30},
        {"t", 1ull << 40},
        {"tb", 1ull << 40},
        {"tib", 1ull << 40},
    };
    return parse_with_units(text, units, sizeof(units) / sizeof(units[0]), bytes);
}

int berth_parse_bool(const char *text, int *value)
{
    static const struct {
        const char *word;
        int value;
    } words[] = {
        {"yes", 1}, {"true", 1}, {"on", 1}, {"1", 1}, {"no", 0}, {"false", 0}, {"off", 0}, {"0", 0},
    };
    int rc = -EINVAL;

    if (!text || !value)
        goto out;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strcasecmp(text, words[i].word) == 0) {
            *value = words[i].value;
            rc = 0;
            break;
        }
    }
out:
    return rc;
}
