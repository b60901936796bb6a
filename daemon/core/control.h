/* The master <-> worker control channel: one SOCK_SEQPACKET pair per worker. */
#ifndef BERTH_CONTROL_H
#define BERTH_CONTROL_H

#include <stdint.h>

#define CTL_TEXT_MAX 8192

enum ctl_type {
    CTL_READY = 1,    /* worker -> master: plugins loaded, options checked */
    CTL_FAILED = 2,   /* worker -> master: text holds every error, one per line */
    CTL_GO = 3,       /* master -> worker: start accepting */
    CTL_STOP = 4,     /* master -> worker: stop accepting, drain up to shutdown_timeout */
    CTL_STOP_NOW = 5, /* master -> worker: close every connection now */
    CTL_REOPEN = 6,   /* master -> worker: reopen the log file (rotated) */

    /* master -> worker: stop accepting on listener N (text "N": its index in the worker's
     * config); its plugin keeps crashing workers. */
    CTL_QUARANTINE = 7,
    /* master -> worker: accept on listener N again. */
    CTL_RESUME = 8,
};

typedef struct ctl_msg {
    uint32_t type;
    uint32_t len;
    char text[CTL_TEXT_MAX];
} ctl_msg_t;

/* 0 or -errno. Never blocks for long: the channel holds a few messages at most. */
int ctl_send(int fd, uint32_t type, const char *text);

#endif
