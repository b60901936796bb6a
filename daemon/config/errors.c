/*
 * Config errors: what config_errors_t holds, and how a parse collects its own.
 *
 * A config of millions of wrong lines must not cost millions of messages: config_errors_t
 * keeps the first CONFIG_ERRORS_MAX and counts the rest. A parse finds errors out of order
 * (a listener is checked when its section ends, plugins at the very end) but reports them by
 * file, in the order the files were read, then by line; so it keeps the CONFIG_ERRORS_MAX
 * errors that sort first in a max-heap, formats a message only when it enters the heap, and
 * only counts the others. Time is linear in the errors found, memory a constant.
 */
#include "config/parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- config_errors_t ------------------------------------------------------------------- */

static size_t kept_count(const config_errors_t *errs)
{
    return errs->count - (errs->more ? 1 : 0);
}

/* Count `n` errors that are not kept, and say so in the last line. */
static void errors_drop(config_errors_t *errs, size_t n)
{
    char *line = NULL;
    char **msgs;
    size_t more = errs->more + n;

    if (n == 0)
        return;
    if (asprintf(&line, "... and %zu more error%s", more, more == 1 ? "" : "s") < 0)
        return; /* out of memory: the report stays as it was */
    if (errs->more) {
        free(errs->msgs[errs->count - 1]);
        errs->msgs[errs->count - 1] = line;
    } else {
        msgs = realloc(errs->msgs, (errs->count + 1) * sizeof(*msgs));
        if (!msgs) {
            free(line);
            return;
        }
        errs->msgs = msgs;
        errs->msgs[errs->count++] = line;
    }
    errs->more = more;
}

/* Keep `msg` (owned now) if there is room, else count it. */
static void errors_append(config_errors_t *errs, char *msg)
{
    char **msgs;

    if (kept_count(errs) >= CONFIG_ERRORS_MAX) {
        free(msg);
        errors_drop(errs, 1);
        return;
    }
    msgs = realloc(errs->msgs, (errs->count + 1) * sizeof(*msgs));
    if (!msgs) {
        free(msg);
        return;
    }
    errs->msgs = msgs;
    errs->msgs[errs->count++] = msg;
}

void config_errors_add(config_errors_t *errs, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL, *full = NULL;
    int n;

    if (!errs)
        return;
    if (kept_count(errs) >= CONFIG_ERRORS_MAX) {
        errors_drop(errs, 1);
        return;
    }
    va_start(ap, fmt);
    n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        msg = NULL;
        goto out;
    }
    if (file)
        n = asprintf(&full, "%s:%d: %s", file, line, msg);
    else
        n = asprintf(&full, "%s", msg);
    if (n < 0) {
        full = NULL;
        goto out;
    }
    errors_append(errs, full);
    full = NULL;
out:
    free(msg);
    free(full);
}

void config_errors_free(config_errors_t *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->count; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->count = 0;
    errs->more = 0;
}

size_t config_errors_total(const config_errors_t *errs)
{
    return errs ? kept_count(errs) + errs->more : 0;
}

/* ---- a parse's errors ------------------------------------------------------------------ */

static int key_less(const struct error_key *x, const struct error_key *y)
{
    if (x->rank != y->rank)
        return x->rank < y->rank;
    if (x->line != y->line)
        return x->line < y->line;
    return x->seq < y->seq;
}

static int compare_keys(const void *a, const void *b)
{
    const struct error_key *x = a, *y = b;

    return key_less(x, y) ? -1 : key_less(y, x);
}

static void heap_swap(struct error_key *h, size_t i, size_t j)
{
    struct error_key t = h[i];

    h[i] = h[j];
    h[j] = t;
}

static void heap_up(struct error_key *h, size_t i)
{
    while (i > 0 && key_less(&h[(i - 1) / 2], &h[i])) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct error_key *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, top = i;
        if (l < n && key_less(&h[top], &h[l]))
            top = l;
        if (r < n && key_less(&h[top], &h[r]))
            top = r;
        if (top == i)
            return;
        heap_swap(h, i, top);
        i = top;
    }
}

static size_t file_rank(const struct parse *p, const char *file)
{
    if (p->cur && p->cur->name == file)
        return p->cur->rank;
    for (size_t i = 0; file && i < p->cfg->nfiles; i++)
        if (p->cfg->files[i] == file || strcmp(p->cfg->files[i], file) == 0)
            return i;
    return SIZE_MAX;
}

void parse_verror_at(struct parse *p, const char *file, int line, const char *fmt, va_list ap)
{
    struct error_key key = {.line = line};
    char *msg = NULL;
    int n;

    p->nerrors++;
    if (p->cur)
        p->cur->nerrors++;
    if (!p->errs)
        return;
    key.rank = file_rank(p, file);
    key.seq = p->nerrors;
    if (p->nkept == CONFIG_ERRORS_MAX && !key_less(&key, &p->kept[0])) {
        p->dropped++;
        return;
    }
    if (vasprintf(&msg, fmt, ap) < 0) {
        p->nomem = 1;
        return;
    }
    n = asprintf(&key.msg, "%s:%d: %s", file, line, msg);
    free(msg);
    if (n < 0) {
        p->nomem = 1;
        return;
    }
    if (p->nkept == CONFIG_ERRORS_MAX) {
        free(p->kept[0].msg);
        p->kept[0] = key;
        heap_down(p->kept, p->nkept, 0);
        p->dropped++;
    } else {
        p->kept[p->nkept++] = key;
        heap_up(p->kept, p->nkept - 1);
    }
}

void parse_error_at(struct parse *p, const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    parse_verror_at(p, file, line, fmt, ap);
    va_end(ap);
}

void parse_error(struct parse *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    parse_verror_at(p, p->cur->name, p->cur->line, fmt, ap);
    va_end(ap);
}

void parse_errors_finish(struct parse *p)
{
    qsort(p->kept, p->nkept, sizeof(*p->kept), compare_keys);
    for (size_t i = 0; i < p->nkept; i++)
        errors_append(p->errs, p->kept[i].msg); /* p->errs is set when anything was kept */
    p->nkept = 0;
    if (p->errs)
        errors_drop(p->errs, p->dropped);
    p->dropped = 0;
}
