/*
 * The line reader in front of inih, [sections], includes and globbing.
 *
 * inih tokenizes `key = value` lines, but our own line reader sits in front of it. Debian's
 * inih is built without INI_HANDLER_LINENO, with a 200-byte line buffer, and reports only the
 * first syntax error; so the reader counts lines (the handler runs right after the reader
 * returns each line, so its counter is the handler's line), reads each line whole so a long
 * one is an error instead of being split in two, tracks [sections] itself (inih cuts their
 * names at 50 bytes and does not report empty ones), and checks every line inih would reject,
 * handing inih only lines it accepts.
 *
 * What it reads is bounded: a file over CONFIG_MAX_FILE_SIZE is refused before a byte of it
 * is read (and one that grows past it while read is cut there), and a config reads at most
 * CONFIG_MAX_FILES files and an include pattern looks at most at MAX_GLOB_ENTRIES directory
 * entries, so a pattern matching or scanning a huge folder is one error.
 */
#include "config/parse.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FILE_MIB (CONFIG_MAX_FILE_SIZE >> 20)
#define MAX_GLOB_ENTRIES (16 * CONFIG_MAX_FILES) /* directory entries one include looks at */

char *parse_strdup(struct parse *p, const char *s)
{
    char *d = strdup(s);

    if (!d)
        p->nomem = 1;
    return d;
}

/* `path` as written in a file whose directory is `dir`. */
char *parse_path_in(struct parse *p, const char *dir, const char *path)
{
    char *full = NULL;

    if (path[0] == '/' || !dir)
        return parse_strdup(p, path);
    if (asprintf(&full, "%s/%s", dir, path) < 0) {
        full = NULL;
        p->nomem = 1;
    }
    return full;
}

char *parse_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\r';
}

/* glob(3) gives its error callback no user pointer. */
static _Thread_local int glob_errno;
static _Thread_local char glob_epath[PATH_MAX];

/* glob(3) lists a whole folder before it returns: count the entries one pattern looks at, so
 * that a pattern aimed at a folder of millions of files is one error, not millions of names
 * in memory. */
static _Thread_local size_t glob_entries;
static _Thread_local int glob_too_many;

static void *glob_opendir(const char *path)
{
    return opendir(path);
}

static struct dirent *glob_readdir(void *dir)
{
    struct dirent *d;

    if (glob_too_many)
        return NULL;
    d = readdir(dir);
    if (d && ++glob_entries > MAX_GLOB_ENTRIES) {
        glob_too_many = 1;
        return NULL;
    }
    return d;
}

static void glob_closedir(void *dir)
{
    closedir(dir);
}

static int glob_error(const char *epath, int eerrno)
{
    /* A folder that does not exist just matches nothing. */
    if (eerrno == ENOENT || eerrno == ENOTDIR)
        return 0;
    glob_errno = eerrno;
    snprintf(glob_epath, sizeof(glob_epath), "%s", epath);
    return 1;
}

/* `value` as a glob pattern, relative to `dir` with the wildcards of `dir` escaped: a config
 * folder named "[x]" still means itself. */
static char *glob_pattern(struct parse *p, const char *dir, const char *value)
{
    size_t n = strlen(dir), k = 0;
    char *out;

    if (value[0] == '/')
        return parse_strdup(p, value);
    out = malloc(2 * n + strlen(value) + 2);
    if (!out) {
        p->nomem = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[\\", dir[i]))
            out[k++] = '\\';
        out[k++] = dir[i];
    }
    out[k++] = '/';
    strcpy(out + k, value);
    return out;
}

static int compare_paths(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void reader_include(struct parse *p, const char *value)
{
    struct source *s = p->cur;
    char *pattern = NULL;
    glob_t g;
    int rc;

    memset(&g, 0, sizeof(g));
    if (p->flags & CONFIG_LOAD_NO_INCLUDE) {
        parse_error(p, "include '%s': includes are not allowed here", value);
        goto out;
    }
    if (*value == '\0') {
        parse_error(p, "include: the pattern is empty");
        goto out;
    }
    if (s->depth >= MAX_INCLUDE_DEPTH) {
        parse_error(p, "include '%s': includes nested more than %d deep", value, MAX_INCLUDE_DEPTH);
        goto out;
    }
    if (!strpbrk(value, "*?[")) {
        /* A plain file name is meant to exist: only a pattern may match nothing. */
        pattern = parse_path_in(p, s->dir, value);
        if (pattern)
            reader_read_file(p, pattern, s->depth + 1, value);
        goto out;
    }
    pattern = glob_pattern(p, s->dir, value);
    if (!pattern)
        goto out;
    glob_errno = 0;
    glob_entries = 0;
    glob_too_many = 0;
    g.gl_opendir = glob_opendir;
    g.gl_readdir = glob_readdir;
    g.gl_closedir = glob_closedir;
    g.gl_stat = stat;
    g.gl_lstat = lstat;
    rc = glob(pattern, GLOB_NOSORT | GLOB_ALTDIRFUNC, glob_error, &g);
    if (glob_too_many) {
        parse_error(p, "include '%s': looks at more than %d directory entries", value,
                    MAX_GLOB_ENTRIES);
        goto out;
    }
    if (rc == GLOB_NOSPACE) {
        p->nomem = 1;
        goto out;
    }
    if (rc == GLOB_ABORTED) {
        parse_error(p, "include '%s': %s: %s", value, glob_epath, strerror(glob_errno));
        goto out;
    }
    if (rc != 0)
        goto out; /* GLOB_NOMATCH */
    if (g.gl_pathc > CONFIG_MAX_FILES - p->cfg->nfiles) {
        parse_error(p, "include '%s': matches %zu files, more than a config may read (%d in all)",
                    value, g.gl_pathc, CONFIG_MAX_FILES);
        goto out;
    }
    qsort(g.gl_pathv, g.gl_pathc, sizeof(*g.gl_pathv), compare_paths);
    for (size_t i = 0; i < g.gl_pathc; i++)
        reader_read_file(p, g.gl_pathv[i], s->depth + 1, value);
out:
    globfree(&g);
    free(pattern);
}

/* "[name]" (trimmed, s->kind set to what follows). `line` is trimmed and starts with '['. */
static void section_header(struct source *s, char *line)
{
    struct parse *p = s->p;
    char *close = strchr(line, ']');
    char *name = line + 1, *after, *end;

    keys_section_end(s);
    s->kind = SEC_SKIP;
    if (!close) {
        parse_error(p, "section header without a closing ']'");
        return;
    }
    *close = '\0';
    after = close + 1;
    while (is_blank(*after))
        after++;
    if (*after != '\0' && *after != ';' && *after != '#') {
        parse_error(p, "unexpected text after the section header: '%s'", after);
        return;
    }
    while (is_blank(*name))
        name++;
    end = name + strlen(name);
    while (end > name && is_blank(end[-1]))
        *--end = '\0';
    if (!keys_valid_name(name)) {
        parse_error(p, "invalid section name '%s' (1 to %d letters, digits, '-', '_' or '.')", name,
                    MAX_NAME);
        return;
    }
    keys_section_begin(s, name);
}

/* ---- reading --------------------------------------------------------------------------- */

static int source_getc(struct source *s)
{
    if (s->fp)
        return getc(s->fp);
    if (s->mempos < s->memlen)
        return (unsigned char)s->mem[s->mempos++];
    return EOF;
}

/* Would inih see `key = value` here? Its own test: the first '=' or ':' before an inline
 * comment (';' after whitespace). */
static int key_line_ok(struct source *s, const char *line)
{
    const char *q = line;
    int was_space = 0;

    while (*q && *q != '=' && *q != ':' && !(was_space && *q == ';')) {
        was_space = isspace((unsigned char)*q);
        q++;
    }
    if (*q != '=' && *q != ':') {
        parse_error(s->p, "expected 'key = value', a [section] or a comment");
        return -EINVAL;
    }
    if (q == line) {
        parse_error(s->p, "a key name must come before '%c'", *q);
        return -EINVAL;
    }
    return 0;
}

/* inih's fgets-style reader: one whole line per call (so inih's line count is ours), and
 * only lines inih will accept; anything else is reported here and handed on as a blank. */
static char *read_line(char *str, int num, void *stream)
{
    struct source *s = stream;
    struct parse *p = s->p;
    size_t cap = num > 1 ? (size_t)num - 1 : 0, len = 0, total = 0, nuls = 0;
    int c = EOF, last = 0;
    char *line, *end;

    for (;;) {
        c = source_getc(s);
        if (c != EOF && ++s->bytes > CONFIG_MAX_FILE_SIZE) {
            /* It grew while read: what was read is checked, the rest is refused. */
            parse_error_at(p, s->name, s->line + 1,
                           "the file grew past %u MiB, the most a config file may hold",
                           MAX_FILE_MIB);
            return NULL;
        }
        if (c == EOF || c == '\n')
            break;
        if (c == '\0')
            nuls++;
        if (len < cap)
            str[len++] = (char)c;
        total++;
        last = c;
    }
    if (c == EOF && total == 0) {
        int err = errno;
        if (s->fp && ferror(s->fp))
            parse_error_at(p, s->name, s->line + 1, "read error: %s", strerror(err));
        return NULL;
    }
    s->line++;
    if (last == '\r') {
        total--;
        if (len > total)
            len = total;
    }
    str[len] = '\0';
    if (total > cap) {
        parse_error(p, "line too long (%zu characters; the limit is %zu)", total, cap);
        str[0] = '\0';
        return str;
    }
    if (nuls) {
        parse_error(p, "NUL byte in line");
        str[0] = '\0';
        return str;
    }

    line = str;
    if (s->line == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
        line += 3;
    /* Leading blanks go too: inih would take an indented line for the continuation of the
     * previous value, a Python configparser habit that only hides mistakes here. */
    while (isspace((unsigned char)*line))
        line++;
    end = line + strlen(line);
    while (end > line && isspace((unsigned char)end[-1]))
        *--end = '\0';

    if (*line == '[')
        section_header(s, line);
    else if (*line != '\0' && *line != ';' && *line != '#' && key_line_ok(s, line) == 0) {
        memmove(str, line, (size_t)(end - line) + 1);
        return str;
    }
    str[0] = '\0';
    return str;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parse *p = user;
    struct source *s = p->cur;

    /* `section` is inih's idea of it; ours comes from the reader (see the top of the file). */
    if (s->kind == SEC_SKIP)
        return 1;
    if (!keys_valid_name(name)) {
        parse_error(p, "invalid key name '%s' (1 to %d letters, digits, '-', '_' or '.')", name,
                    MAX_NAME);
        return 1;
    }
    switch (s->kind) {
    case SEC_NONE:
        parse_error(p, "key '%s' is outside any section", name);
        break;
    case SEC_DAEMON:
        keys_daemon(p, name, value);
        break;
    case SEC_LISTENER:
        keys_listener(p, name, value);
        break;
    case SEC_SKIP:
        break;
    }
    /* Always go on: every error is reported by us, not through inih's return value. */
    return 1;
}

/* `path` in cfg->files (added if new), and its index there in *rank. */
static const char *add_file_name(struct parse *p, const char *path, size_t *rank)
{
    berth_config_t *cfg = p->cfg;
    char **files;
    char *copy;

    for (size_t i = 0; i < cfg->nfiles; i++) {
        if (strcmp(cfg->files[i], path) == 0) {
            *rank = i;
            return cfg->files[i];
        }
    }
    copy = parse_strdup(p, path);
    files = realloc(cfg->files, (cfg->nfiles + 1) * sizeof(*files));
    if (!copy || !files) {
        p->nomem = 1;
        free(copy);
        if (files)
            cfg->files = files;
        return NULL;
    }
    cfg->files = files;
    *rank = cfg->nfiles;
    cfg->files[cfg->nfiles++] = copy;
    return copy;
}

/* Read one source through inih. `id` names it for include-cycle checks (owned by us now). */
static void read_source(struct parse *p, struct source *src, char *id)
{
    struct source *prev = p->cur;
    int rc;

    src->p = p;
    src->dir = parse_dir_of(src->name);
    if (!src->dir) {
        p->nomem = 1;
        free(id);
        return;
    }
    p->reading[p->nreading++] = id;
    p->cur = src;
    rc = ini_parse_stream(read_line, src, on_key, p);
    keys_section_end(src);
    /* Only if our own checks missed what inih refused: never expected. */
    if (rc > 0 && src->nerrors == 0)
        parse_error_at(p, src->name, rc, "syntax error");
    else if (rc == -2)
        p->nomem = 1;
    p->cur = prev;
    free(p->reading[--p->nreading]);
    free(src->dir);
}

/* The main file (pattern NULL) or a file an include matched (errors at the include line). */
void reader_read_file(struct parse *p, const char *path, int depth, const char *pattern)
{
    struct source src = {.depth = depth};
    struct stat st;
    char *real = NULL;
    FILE *fp = NULL;
    const char *problem = NULL;
    char why[128];

    if (stat(path, &st) < 0) {
        problem = strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
        problem = "not a regular file";
    } else if ((uint64_t)st.st_size > CONFIG_MAX_FILE_SIZE) {
        snprintf(why, sizeof(why), "%lld bytes, more than the %u MiB a config file may hold",
                 (long long)st.st_size, MAX_FILE_MIB);
        problem = why;
    } else if (p->cfg->nfiles >= CONFIG_MAX_FILES) {
        snprintf(why, sizeof(why), "more than %d files, the most a config may read",
                 CONFIG_MAX_FILES);
        problem = why;
    } else if (!(real = realpath(path, NULL))) {
        problem = strerror(errno);
    }
    if (!problem) {
        for (size_t i = 0; i < p->nreading; i++) {
            if (p->reading[i] && strcmp(p->reading[i], real) == 0) {
                problem = "already being read (an include cycle)";
                break;
            }
        }
    }
    if (!problem && !(fp = fopen(path, "r")))
        problem = strerror(errno);
    if (problem) {
        if (pattern)
            parse_error(p, "include '%s': %s: %s", pattern, path, problem);
        else
            parse_error_at(p, path, 0, "%s", problem);
        free(real);
        goto out;
    }
    src.name = add_file_name(p, path, &src.rank);
    if (!src.name) {
        free(real);
        goto out;
    }
    src.fp = fp;
    read_source(p, &src, real);
out:
    if (fp)
        fclose(fp);
}

/* config_load_string()'s text, as the main file. */
void reader_read_string(struct parse *p, const char *name, const char *text, size_t len)
{
    struct source src = {.mem = text, .memlen = len};
    char *id;

    if (len > CONFIG_MAX_FILE_SIZE) {
        parse_error_at(p, name, 0, "%zu bytes, more than the %u MiB a config file may hold", len,
                       MAX_FILE_MIB);
        return;
    }
    id = parse_strdup(p, name);
    src.name = add_file_name(p, name, &src.rank);
    if (src.name && id)
        read_source(p, &src, id);
    else
        free(id);
}
