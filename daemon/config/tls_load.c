/*
 * The config as the master and `berthd -t` load it: parsed, then the TLS files read (as
 * root, before any worker drops privileges). Apart from tls_files.c so that what parses
 * the config alone (berthctl, the config fuzzer) needs none of this.
 */
#include "config/tls.h"

int config_load_with_tls(const char *path, berth_config_t **out, config_errors_t *errs)
{
    int rc = config_load(path, out, errs);
    if (rc == 0 && (rc = config_tls_load(*out, errs)) != 0) {
        config_free(*out);
        *out = NULL;
    }
    return rc;
}
