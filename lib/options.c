/*
 * Declared plugin options (berth_option_t tables, <berth/handler.h>): the checks and value
 * parsers berthd applies, shared with berth-testhost so a plugin's unit tests see its options
 * exactly as the daemon hands them over.
 */
#include "berth/options.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth/cidr.h"
#include "berth/units.h"

static const char *type_name(berth_option_type_t t)
{
    switch (t) {
    case BERTH_OPT_STRING:
        return "string";
    case BERTH_OPT_BOOL:
        return "bool";
    case BERTH_OPT_INT:
        return "integer";
    case BERTH_OPT_DURATION:
        return "duration";
    case BERTH_OPT_SIZE:
        return "size";
    case BERTH_OPT_CIDR_LIST:
        return "CIDR list";
    case BERTH_OPT_PATH:
        return "path";
    case BERTH_OPT_ENUM:
        return "enum";
    }
    return NULL;
}

/* The bytes a type's value takes at its offset. */
static size_t type_size(berth_option_type_t t)
{
    switch (t) {
    case BERTH_OPT_STRING:
    case BERTH_OPT_PATH:
        return sizeof(const char *);
    case BERTH_OPT_BOOL:
    case BERTH_OPT_ENUM:
        return sizeof(int);
    case BERTH_OPT_INT:
        return sizeof(int64_t);
    case BERTH_OPT_DURATION:
    case BERTH_OPT_SIZE:
        return sizeof(uint64_t);
    case BERTH_OPT_CIDR_LIST:
        return sizeof(berth_cidr_list_t);
    }
    return 0;
}

static int bounded(const berth_option_t *o)
{
    return o->min != 0 || o->max != 0;
}

static void bound_text(const berth_option_t *o, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!bounded(o))
        return;
    snprintf(buf, len, " %" PRId64 "..%" PRId64, o->min, o->max);
    if (o->type == BERTH_OPT_DURATION)
        snprintf(buf, len, " %" PRId64 "ms..%" PRId64 "ms", o->min, o->max);
}

void berth_option_type_text(const berth_option_t *o, char *buf, size_t len)
{
    const char *t = type_name(o->type);
    size_t off = (size_t)snprintf(buf, len, "%s", t ? t : "?");
    if (off >= len)
        return;
    if (o->type == BERTH_OPT_ENUM && o->choices) {
        for (size_t i = 0; o->choices[i] && off < len; i++)
            off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "|" : " ", o->choices[i]);
        return;
    }
    if (o->type == BERTH_OPT_CIDR_LIST && (o->flags & BERTH_OPT_PORTS)) {
        snprintf(buf + off, len - off, " (CIDR[:port], ...)");
        return;
    }
    char b[96];
    bound_text(o, b, sizeof b);
    snprintf(buf + off, len - off, "%s", b);
}

int berth_option_parse(const berth_option_t *o, const char *text, void *slot, char *err,
                       size_t errlen)
{
    char want[160];
    berth_option_type_text(o, want, sizeof want);
    switch (o->type) {
    case BERTH_OPT_STRING: {
        const char *s = text;
        memcpy(slot, &s, sizeof s);
        return 0;
    }
    case BERTH_OPT_PATH: {
        if (text[0] != '/') {
            snprintf(err, errlen, "%s: want an absolute path, not '%s'", o->name, text);
            return -EINVAL;
        }
        const char *s = text;
        memcpy(slot, &s, sizeof s);
        return 0;
    }
    case BERTH_OPT_BOOL: {
        int b;
        if (berth_parse_bool(text, &b) != 0) {
            snprintf(err, errlen, "%s: want yes or no, not '%s'", o->name, text);
            return -EINVAL;
        }
        memcpy(slot, &b, sizeof b);
        return 0;
    }
    case BERTH_OPT_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(text, &end, 10);
        int ok = text[0] != '\0' && *end == '\0' && errno == 0 && text[0] != ' ' &&
                 text[0] != '+' && (!bounded(o) || (n >= o->min && n <= o->max));
        if (!ok) {
            snprintf(err, errlen, "%s: want an %s, not '%s'", o->name, want, text);
            return -EINVAL;
        }
        int64_t v = n;
        memcpy(slot, &v, sizeof v);
        return 0;
    }
    case BERTH_OPT_DURATION:
    case BERTH_OPT_SIZE: {
        uint64_t v;
        int rc = o->type == BERTH_OPT_DURATION ? berth_parse_duration(text, &v)
                                               : berth_parse_size(text, &v);
        if (rc == 0 && bounded(o) && (v > INT64_MAX || (int64_t)v < o->min || (int64_t)v > o->max))
            rc = -EINVAL;
        if (rc != 0) {
            snprintf(err, errlen, "%s: want a %s%s, not '%s'", o->name, want,
                     o->type == BERTH_OPT_DURATION ? " (250ms, 10s, 5m, 1h)"
                                                   : " (512, 64K, 10M, 2G)",
                     text);
            return -EINVAL;
        }
        memcpy(slot, &v, sizeof v);
        return 0;
    }
    case BERTH_OPT_CIDR_LIST: {
        berth_cidr_list_t list = {0};
        char bad[128];
        int rc =
            berth_cidr_list_parse(&list, text, (o->flags & BERTH_OPT_PORTS) != 0, bad, sizeof bad);
        if (rc != 0)
            berth_cidr_list_free(&list); /* a failed parse keeps what it had grown */
        if (rc == -ENOMEM) {
            snprintf(err, errlen, "%s: out of memory", o->name);
            return rc;
        }
        if (rc != 0) {
            snprintf(err, errlen, "%s: '%s' is not an address or CIDR%s", o->name, bad,
                     (o->flags & BERTH_OPT_PORTS) ? " with an optional :port" : "");
            return -EINVAL;
        }
        memcpy(slot, &list, sizeof list);
        return 0;
    }
    case BERTH_OPT_ENUM:
        for (int i = 0; o->choices && o->choices[i]; i++) {
            if (strcmp(o->choices[i], text) == 0) {
                memcpy(slot, &i, sizeof i);
                return 0;
            }
        }
        snprintf(err, errlen, "%s: want one of %s, not '%s'", o->name, want + strlen("enum "),
                 text);
        return -EINVAL;
    }
    snprintf(err, errlen, "%s: unknown option type %d", o->name, (int)o->type);
    return -EINVAL;
}

int berth_options_check_table(const berth_option_t *table, size_t size, char *err, size_t errlen)
{
    if (table == NULL)
        return 0;
    for (const berth_option_t *o = table; o->name; o++) {
        size_t need = type_size(o->type);
        if (need == 0) {
            snprintf(err, errlen, "option '%s': unknown type %d", o->name, (int)o->type);
            return -EINVAL;
        }
        if (o->offset > size || size - o->offset < need) {
            snprintf(err, errlen,
                     "option '%s': offset %zu and its %zu bytes lie outside options_size %zu",
                     o->name, o->offset, need, size);
            return -EINVAL;
        }
        if (o->type == BERTH_OPT_ENUM && (o->choices == NULL || o->choices[0] == NULL)) {
            snprintf(err, errlen, "option '%s': an enum without choices", o->name);
            return -EINVAL;
        }
        if (o->min > o->max) {
            snprintf(err, errlen, "option '%s': min %" PRId64 " is over max %" PRId64, o->name,
                     o->min, o->max);
            return -EINVAL;
        }
        for (const berth_option_t *p = table; p < o; p++) {
            if (strcmp(p->name, o->name) == 0) {
                snprintf(err, errlen, "option '%s' declared twice", o->name);
                return -EINVAL;
            }
        }
        if (o->def) {
            /* Parse the default into scratch space, to find a bad one here and not at the
             * first listener that leaves the option out. */
            union {
                berth_cidr_list_t list;
                int64_t i;
                const char *s;
            } scratch;
            char why[256];
            int rc = berth_option_parse(o, o->def, &scratch, why, sizeof why);
            if (rc) {
                snprintf(err, errlen, "option '%s': its default: %s", o->name, why);
                return rc;
            }
            if (o->type == BERTH_OPT_CIDR_LIST)
                berth_cidr_list_free(&scratch.list);
        }
    }
    return 0;
}

const berth_option_t *berth_options_find(const berth_option_t *table, const char *key)
{
    for (const berth_option_t *o = table; o && o->name; o++)
        if (strcmp(o->name, key) == 0)
            return o;
    return NULL;
}

void berth_options_free(const berth_option_t *table, void *opts)
{
    if (opts == NULL)
        return;
    for (const berth_option_t *o = table; o && o->name; o++) {
        if (o->type != BERTH_OPT_CIDR_LIST)
            continue;
        berth_cidr_list_t list;
        memcpy(&list, (char *)opts + o->offset, sizeof list);
        berth_cidr_list_free(&list);
    }
    free(opts);
}
