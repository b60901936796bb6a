/* Loading a plugin: dlopen, the ABI check before anything is called, load(). */
#ifndef BERTH_LOADER_H
#define BERTH_LOADER_H

#include <stddef.h>
#include <sys/types.h>

#include "berth/handler.h"
#include "config/config.h"

typedef struct plugin {
    char *path;
    void *dl;
    /* The plugin's descriptor copied up to its size, zero-filled beyond: members a plugin
     * built against an older header lacks read as NULL. */
    berth_handler_t desc;
    int loaded; /* load() returned 0: unload() is owed */
} plugin_t;

/*
 * Open `path`, check its descriptor and call its load(host). Returns 0 and *out, or a
 * negative errno with one line in err naming the file ("PATH: why").
 */
int plugin_open(const char *path, const berth_host_t *host, plugin_t **out, char *err,
                size_t errlen);
/* Plugins must be owned by root or by this uid (the user that started berthd; default: our
 * own uid), and neither they nor their folder writable by group or others (OpenSSH-style:
 * whoever can write them runs code as the daemon). */
void plugin_set_trusted_uid(uid_t uid);
int plugin_check_file(const char *path, char *err, size_t errlen);
/* unload() and dlclose(). Only once nothing points into the plugin any more. */
void plugin_close(plugin_t *p);

/* The checks alone, on a descriptor as read from a file of `path` (for tests and -t). */
int plugin_check_descriptor(const berth_handler_t *h, const char *path, char *err, size_t errlen);

/* The master, at start (warn 0) and at each reload (warn 1): remember each plugin file's
 * inode, size and mtime, and warn when a reload finds the same inode with new content (a
 * `cp` over a mapped .so, which crashes the workers that have it mapped). */
void plugin_files_note(const berth_config_t *cfg, int warn);

#endif
