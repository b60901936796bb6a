#include "worker/loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/plugin_opts.h"
#include "core/log.h"

/* The smallest descriptor we can make sense of: everything up to and including `name`. */
#define MIN_DESC_SIZE (offsetof(berth_handler_t, name) + sizeof(const char *))

int plugin_check_descriptor(const berth_handler_t *h, const char *path, char *err, size_t errlen)
{
    if (h->abi_version == 0) {
        snprintf(err, errlen,
                 "%s: plugin descriptor is not initialised (abi_version 0): start it with "
                 "BERTH_HANDLER = { BERTH_HANDLER_INIT(\"name\"), ... }",
                 path);
        return -EPROTO;
    }
    if (h->abi_version != BERTH_ABI_VERSION) {
        snprintf(err, errlen, "%s: plugin ABI version %u, this berthd speaks version %u", path,
                 h->abi_version, BERTH_ABI_VERSION);
        return -EPROTO;
    }
    if (h->size < MIN_DESC_SIZE) {
        snprintf(err, errlen, "%s: plugin descriptor is %u bytes, smaller than any valid one (%zu)",
                 path, h->size, (size_t)MIN_DESC_SIZE);
        return -EPROTO;
    }
    if (h->size > sizeof(berth_handler_t)) {
        /* Built against a newer header: it may rely on members we would never call. */
        snprintf(err, errlen,
                 "%s: plugin descriptor is %u bytes, larger than this berthd knows (%zu): "
                 "built for a newer berthd",
                 path, h->size, sizeof(berth_handler_t));
        return -EPROTO;
    }
    return 0;
}

static uid_t trusted_uid;
static int trusted_set;

void plugin_set_trusted_uid(uid_t uid)
{
    trusted_uid = uid;
    trusted_set = 1;
}

/* Whoever may write the file or its folder may run code as the daemon. */
static int check_owner_mode(const char *what, const char *path, const struct stat *st, char *err,
                            size_t errlen)
{
    uid_t owner = trusted_set ? trusted_uid : getuid();
    if (st->st_uid != 0 && st->st_uid != owner) {
        snprintf(err, errlen, "%s: refusing plugin: %s is owned by uid %u, not root or uid %u",
                 path, what, (unsigned)st->st_uid, (unsigned)owner);
        return -EPERM;
    }
    /* A sticky world-writable folder (like /tmp) lets nobody replace our file. */
    int sticky_dir = S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX);
    if ((st->st_mode & (S_IWGRP | S_IWOTH)) && !sticky_dir) {
        snprintf(err, errlen, "%s: refusing plugin: %s is writable by %s (mode %04o)", path, what,
                 st->st_mode & S_IWOTH ? "everyone" : "its group", (unsigned)(st->st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

int plugin_check_file(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -errno;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        return -EINVAL;
    }
    int rc = check_owner_mode("the file", path, &st, err, errlen);
    if (rc)
        return rc;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    if (stat(dir, &st) < 0) {
        snprintf(err, errlen, "%s: %s: %s", path, dir, strerror(errno));
        return -errno;
    }
    return check_owner_mode("its folder", path, &st, err, errlen);
}

int plugin_open(const char *path, const berth_host_t *host, plugin_t **out, char *err,
                size_t errlen)
{
    int rc = 0;
    char table_err[512];
    plugin_t *p = calloc(1, sizeof *p);
    if (p == NULL || (p->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -ENOMEM;
        goto out;
    }
    rc = plugin_check_file(path, err, errlen);
    if (rc)
        goto out;
    dlerror();
    p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (p->dl == NULL) {
        const char *why = dlerror();
        /* dlerror() already names the file; do not say it twice. */
        snprintf(err, errlen, "%s", why ? why : path);
        rc = -ENOENT;
        goto out;
    }
    const berth_handler_t *h = dlsym(p->dl, BERTH_HANDLER_SYMBOL);
    if (h == NULL) {
        snprintf(err, errlen,
                 "%s: not a berth plugin: no symbol '%s' exported (the usual causes: hidden "
                 "visibility, a descriptor not defined with BERTH_HANDLER under "
                 "-fvisibility=hidden; or C++ without extern \"C\", a mangled name; "
                 "'nm -D' lists what it exports)",
                 path, BERTH_HANDLER_SYMBOL);
        rc = -ENOENT;
        goto out;
    }
    rc = plugin_check_descriptor(h, path, err, errlen);
    if (rc)
        goto out;
    memcpy(&p->desc, h, h->size);
    if (p->desc.name == NULL) {
        snprintf(err, errlen, "%s: plugin descriptor has no name", path);
        rc = -EPROTO;
        goto out;
    }
    rc =
        plugin_opts_check_table(p->desc.options, p->desc.options_size, table_err, sizeof table_err);
    if (rc) {
        snprintf(err, errlen, "%s: plugin '%s' declares a bad option table: %s", path, p->desc.name,
                 table_err);
        goto out;
    }
    if (p->desc.load) {
        rc = p->desc.load(host);
        if (rc) {
            snprintf(err, errlen, "%s: plugin '%s' failed to load: %s", path, p->desc.name,
                     strerror(rc < 0 ? -rc : rc));
            rc = rc < 0 ? rc : -rc;
            goto out;
        }
    }
    p->loaded = 1;
    *out = p;
    p = NULL;
out:
    if (p)
        plugin_close(p);
    return rc;
}

void plugin_close(plugin_t *p)
{
    if (p == NULL)
        return;
    if (p->loaded && p->desc.unload)
        p->desc.unload();
    if (p->dl)
        dlclose(p->dl);
    free(p->path);
    free(p);
}

/* What a plugin file was when last seen, per path (the master's own memory). */
typedef struct plugin_stamp {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct plugin_stamp *next;
} plugin_stamp_t;

static plugin_stamp_t *stamps;

static void note_file(const char *path, int warn)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return; /* the workers say why */
    plugin_stamp_t *s = stamps;
    while (s && strcmp(s->path, path) != 0)
        s = s->next;
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL || (s->path = strdup(path)) == NULL) {
            free(s);
            return;
        }
        s->next = stamps;
        stamps = s;
    } else if (warn && s->dev == st.st_dev && s->ino == st.st_ino &&
               (s->size != st.st_size || s->mtime.tv_sec != st.st_mtim.tv_sec ||
                s->mtime.tv_nsec != st.st_mtim.tv_nsec)) {
        log_warn("%s was overwritten in place (same inode, new content): workers that still "
                 "have it mapped may crash; install a plugin as a new file renamed over the old "
                 "one (install(1), or cp to a temporary name and mv)",
                 path);
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->size = st.st_size;
    s->mtime = st.st_mtim;
}

void plugin_files_note(const berth_config_t *cfg, int warn)
{
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const char *path = cfg->listeners[i].plugin_path;
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = cfg->listeners[k].plugin_path &&
                   strcmp(cfg->listeners[k].plugin_path, path ? path : "") == 0;
        if (path && !seen)
            note_file(path, warn);
    }
}
