/*
 * libFuzzer target for the host's parser of declared plugin options
 * (daemon/config/plugin_opts.c): the text an operator writes after a plugin's key, for every
 * option type. The first byte picks the option of a fixed table (one of each type, with and
 * without bounds), the rest is the value. Checks (abort(), in every build): a parse either
 * fails with one FILE:LINE message that names the key, or stores a value that keeps the
 * option's bounds and type (a path absolute, an enum index in range, a list whose entries
 * are whole); the struct is freed without a leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/plugin_opts.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct opts {
    const char *s;
    int b;
    int64_t i;
    int64_t any;
    uint64_t d;
    uint64_t z;
    berth_cidr_list_t cidrs;
    berth_cidr_list_t plain;
    const char *path;
    int e;
} opts_t;

static const char *const words[] = {"none", "password", "certificate", NULL};

static const berth_option_t table[] = {
    {"s", BERTH_OPT_STRING, 0, offsetof(opts_t, s), NULL, 0, 0, NULL, "string"},
    {"b", BERTH_OPT_BOOL, 0, offsetof(opts_t, b), NULL, 0, 0, NULL, "bool"},
    {"i", BERTH_OPT_INT, 0, offsetof(opts_t, i), NULL, -5, 100000, NULL, "bounded int"},
    {"any", BERTH_OPT_INT, 0, offsetof(opts_t, any), NULL, 0, 0, NULL, "int"},
    {"d", BERTH_OPT_DURATION, 0, offsetof(opts_t, d), NULL, 1, 86400000, NULL, "duration"},
    {"z", BERTH_OPT_SIZE, 0, offsetof(opts_t, z), NULL, 64, 16 << 20, NULL, "size"},
    {"cidrs", BERTH_OPT_CIDR_LIST, BERTH_OPT_PORTS, offsetof(opts_t, cidrs), NULL, 0, 0, NULL,
     "rules"},
    {"plain", BERTH_OPT_CIDR_LIST, 0, offsetof(opts_t, plain), NULL, 0, 0, NULL, "cidrs"},
    {"path", BERTH_OPT_PATH, 0, offsetof(opts_t, path), NULL, 0, 0, NULL, "path"},
    {"e", BERTH_OPT_ENUM, 0, offsetof(opts_t, e), NULL, 0, 0, words, "enum"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};
#define NOPTS (sizeof table / sizeof table[0] - 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const berth_option_t *o = &table[data[0] % NOPTS];
    char *value = malloc(size);
    CHECK(value != NULL);
    memcpy(value, data + 1, size - 1);
    value[size - 1] = '\0'; /* the reader never hands a NUL inside a value */
    config_option_t opt = {(char *)o->name, value, "f.conf", 7};
    config_listener_t lc;
    memset(&lc, 0, sizeof lc);
    lc.name = (char *)"l";
    lc.file = "f.conf";
    lc.line = 3;
    lc.options = &opt;
    lc.noptions = 1;
    config_errors_t errs = {0};
    void *out = NULL;
    int rc = plugin_opts_parse(table, sizeof(opts_t), "fuzz", &lc, &out, &errs);
    if (rc != 0) {
        CHECK(out == NULL);
        CHECK(errs.count == 1);
        CHECK(strncmp(errs.msgs[0], "f.conf:7: ", 10) == 0);
        CHECK(strncmp(errs.msgs[0] + 10, o->name, strlen(o->name)) == 0);
    } else {
        const opts_t *v = out;
        CHECK(errs.count == 0);
        CHECK(v->i >= -5 && v->i <= 100000);
        CHECK(v->d == 0 || (v->d >= 1 && v->d <= 86400000));
        CHECK(v->z == 0 || (v->z >= 64 && v->z <= (16 << 20)));
        CHECK(v->b == 0 || v->b == 1);
        CHECK(v->e >= 0 && v->e <= 2);
        CHECK(v->path == NULL || v->path[0] == '/');
        for (size_t k = 0; k < v->plain.count; k++)
            CHECK(v->plain.items[k].port == 0);
        CHECK(v->s == NULL || strcmp(v->s, value) == 0);
    }
    plugin_opts_free(table, out);
    config_errors_free(&errs);
    free(value);
    return 0;
}
