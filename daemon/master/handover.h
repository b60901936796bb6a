/*
 * The handover: what a master hands to the image it re-executes (berthctl upgrade, SIGUSR2)
 * through inherited descriptors, described by a small text document in a memfd whose
 * descriptor the new image gets as `--handover FD`. The format is in docs/upgrade.md; a
 * reader accepts every format up to its own and skips lines it does not know, so a release
 * reads what the previous one wrote and a writer may append keys.
 */
#ifndef BERTH_HANDOVER_H
#define BERTH_HANDOVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config/config.h"
#include "core/stats.h"

#define HANDOVER_FORMAT 1
#define HANDOVER_MAX_GENS 32
#define HANDOVER_TEXT_MAX (256 * 1024) /* far above what the limits below can write */
/* every descriptor a handover can name: see handover_fds */
#define HANDOVER_MAX_FDS (2 * BERTH_MAX_LISTENERS + STATS_WORKERS + 8)

typedef struct ho_sock {
    int fd;
    int slot;
    int protocol;
    int quarantined;
    unsigned long long dev, ino;  /* the unix socket file it made (0: none) */
    struct sockaddr_storage addr; /* as configured (port 0 stays 0) */
    socklen_t addrlen;
    char name[64];
    char address[112];
    char bound[64];
} ho_sock_t;

enum { HO_SERVING = 1, HO_DRAINING = 2 };

typedef struct ho_gen {
    unsigned id;
    int state;           /* HO_SERVING or HO_DRAINING */
    uint64_t kill_in_ms; /* draining: SIGKILL what is left after this long (0: none) */
    char version[64];    /* the berthd version whose workers these are */
} ho_gen_t;

typedef struct ho_worker {
    unsigned gen, index, group;
    pid_t pid;
    int ctl_fd;
    int slot;
} ho_worker_t;

typedef struct handover {
    unsigned format;
    char from[64];  /* the version that wrote it */
    char exe[4096]; /* the path the upgrade executes */
    unsigned next_generation;
    int stats_fd;
    size_t stats_size; /* sizeof(stats_t) of the writer: must equal the reader's */
    int limits_fd;     /* -1: none */
    size_t limits_len;
    uint32_t limits_entries;
    int admin_fd; /* -1: none */
    char admin_path[108];
    int reply_fd;      /* the berthctl upgrade connection waiting for the outcome; -1 */
    int rollback_fd;   /* the previous image, to execute again if this one cannot start; -1 */
    char failed[1024]; /* set by a rollback: why the newer image could not start */
    size_t nsocks;
    ho_sock_t socks[BERTH_MAX_LISTENERS];
    size_t ngens;
    ho_gen_t gens[HANDOVER_MAX_GENS];
    size_t nworkers;
    ho_worker_t workers[STATS_WORKERS];
    /* appended to format 1 (older readers skip them) */
    int metrics_fd;       /* the /metrics listener; -1: none */
    char metrics_at[256]; /* its [daemon] metrics as configured, so a reload keeps it */
    int agent_fd;         /* the agent-check listener; -1: none */
    char agent_at[256];   /* its [daemon] agent as configured */
    size_t npassed;       /* the sockets systemd passed (socket activation), held for life */
    struct {
        int fd;
        char name[256]; /* FileDescriptorName= */
    } passed[BERTH_MAX_LISTENERS];
} handover_t;

void handover_init(handover_t *h);
/* Write h into a new memfd (not close-on-exec), rewound. The fd, or -errno. */
int handover_write(const handover_t *h);
/* Read and check what fd holds (it is read from offset 0, and not closed). 0, or -EINVAL
 * with the reason in err. */
int handover_read(int fd, handover_t *h, char *err, size_t errlen);
/* Parse a document; the same rules as handover_read. */
int handover_parse(const char *text, size_t len, handover_t *h, char *err, size_t errlen);
/* Every descriptor h names. */
size_t handover_fds(const handover_t *h, int *out, size_t max);

#endif
