/*
 * The worker's sandbox. Landlock through raw syscalls (Debian's <linux/landlock.h> stops at
 * ABI 2, so the later constants and the larger ruleset struct are ours), asking the kernel
 * for its ABI first and handling only what it knows; seccomp through libseccomp, as a
 * deny-list: a libuv worker and its plugins use too many calls for an allow-list to stay
 * true across libc and libuv versions, while what is denied here is what an attacker wants
 * and no worker needs.
 *
 * Order matters: Landlock restrict_self and a seccomp filter without TSYNC confine only the
 * calling thread and the threads it starts later, so the worker applies both before libuv's
 * thread pool exists (the pool starts at the first host->work). A plugin that started a
 * thread of its own earlier is told about in the log; seccomp is synced onto it (TSYNC),
 * Landlock cannot be (before ABI 8).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <seccomp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "worker/sandbox.h"
#include "worker/worker.h"

/* ---- Landlock, beyond what the installed header knows ---- */

#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0) /* ABI 4 */
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1)
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
#endif
#define SANDBOX_RULE_NET_PORT 2  /* LANDLOCK_RULE_NET_PORT, ABI 4 */
#define SANDBOX_RESOLVER_PORT 53 /* DNS over TCP: the resolver's fallback */

/* struct landlock_ruleset_attr as of ABI 6; the kernel is told how much of it to read. */
struct sandbox_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net; /* ABI 4 */
    uint64_t scoped;             /* ABI 6 */
};

struct sandbox_net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
} __attribute__((packed));

#define FS_ABI1                                                                                    \
    (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |   \
     LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |                                 \
     LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | \
     LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |   \
     LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM)
/* Rights that mean something on a file (a rule on a file may carry only these). */
#define FS_FILE_RIGHTS                                                                             \
    (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |   \
     LANDLOCK_ACCESS_FS_TRUNCATE | LANDLOCK_ACCESS_FS_IOCTL_DEV)
#define FS_READ (LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
#define FS_WRITE                                                                                   \
    (LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_DIR |   \
     LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REFER |   \
     LANDLOCK_ACCESS_FS_TRUNCATE)

static uint64_t fs_handled(int abi)
{
    uint64_t fs = FS_ABI1;
    if (abi >= 2)
        fs |= LANDLOCK_ACCESS_FS_REFER;
    if (abi >= 3)
        fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
    if (abi >= 5)
        fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
    return fs;
}

int sandbox_landlock_abi(void)
{
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi > 0 ? (int)abi : 0;
}

/* ---- declarations ---- */

enum decl_kind { DECL_PATH, DECL_CONNECT, DECL_BIND };

typedef struct decl {
    const berth_listener_t *l;
    enum decl_kind kind;
    unsigned access; /* DECL_PATH: BERTH_ACCESS_* */
    int port;        /* DECL_CONNECT, DECL_BIND: 0..65535 or BERTH_PORT_ANY */
    char *path;
} decl_t;

static decl_t *decls;
static size_t ndecls, decls_cap;
static int applied; /* no declaration counts once the worker is confined */

static int decl_add(const decl_t *d)
{
    if (applied)
        return -EBUSY;
    if (ndecls == decls_cap) {
        size_t cap = decls_cap ? decls_cap * 2 : 16;
        decl_t *n = realloc(decls, cap * sizeof *n);
        if (n == NULL)
            return -ENOMEM;
        decls = n;
        decls_cap = cap;
    }
    decls[ndecls++] = *d;
    return 0;
}

int sandbox_allow_path(berth_listener_t *l, const char *path, unsigned access)
{
    struct stat st;
    if (l == NULL || path == NULL || path[0] != '/' || access == 0 ||
        (access & ~(BERTH_ACCESS_READ | BERTH_ACCESS_WRITE)) != 0)
        return -EINVAL;
    if (stat(path, &st) < 0)
        return -errno;
    decl_t d = {.l = l, .kind = DECL_PATH, .access = access, .path = strdup(path)};
    if (d.path == NULL)
        return -ENOMEM;
    int rc = decl_add(&d);
    if (rc)
        free(d.path);
    return rc;
}

static int allow_port(berth_listener_t *l, enum decl_kind kind, int port)
{
    if (l == NULL || port < BERTH_PORT_ANY || port > 65535)
        return -EINVAL;
    decl_t d = {.l = l, .kind = kind, .port = port};
    return decl_add(&d);
}

int sandbox_allow_connect(berth_listener_t *l, int port)
{
    return allow_port(l, DECL_CONNECT, port);
}

int sandbox_allow_bind(berth_listener_t *l, int port)
{
    return allow_port(l, DECL_BIND, port);
}

void sandbox_forget(void)
{
    for (size_t i = 0; i < ndecls; i++)
        free(decls[i].path);
    free(decls);
    decls = NULL;
    ndecls = decls_cap = 0;
}

/* ---- what every worker reads ---- */

/* Read-only: the time zone, the resolver and NSS (getaddrinfo dlopen()s libnss_* at its
 * first call, after the sandbox), shared libraries, randomness. A path missing here is
 * skipped. */
static const char *const base_read[] = {
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ld.so.cache",
    "/run/systemd/resolve",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/dev/urandom",
    "/dev/random",
    /* its own /proc entry: glibc and the sanitizers read /proc/self/maps, status, task */
    "/proc/self",
};

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZED 1
#endif
#endif

typedef struct ruleset {
    int fd, abi;
    uint64_t fs;
    unsigned rules;
} ruleset_t;

static int add_path(ruleset_t *rs, const char *path, uint64_t rights, int must)
{
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0)
        return must ? -errno : 0;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (!S_ISDIR(st.st_mode))
        rights &= FS_FILE_RIGHTS;
    rights &= rs->fs;
    struct landlock_path_beneath_attr pb = {.allowed_access = rights, .parent_fd = fd};
    int rc = 0;
    if (rights && syscall(SYS_landlock_add_rule, rs->fd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0)
        rc = -errno;
    else if (rights)
        rs->rules++;
    close(fd);
    return rc;
}

static int add_port(ruleset_t *rs, uint64_t right, int port)
{
    struct sandbox_net_port_attr np = {.allowed_access = right, .port = (uint64_t)port};
    if (syscall(SYS_landlock_add_rule, rs->fd, SANDBOX_RULE_NET_PORT, &np, 0) < 0)
        return -errno;
    rs->rules++;
    return 0;
}

static int serves(const worker_t *w, const berth_listener_t *l)
{
    for (size_t i = 0; i < w->nlisteners; i++)
        if (&w->listeners[i] == l)
            return w->listeners[i].fd >= 0;
    return 0;
}

static int landlock_apply(worker_t *w, int abi, unsigned *rules, char *why, size_t whylen)
{
    int connect_any = 0, bind_any = 0;
    for (size_t i = 0; i < ndecls; i++) {
        if (!serves(w, decls[i].l))
            continue;
        connect_any |= decls[i].kind == DECL_CONNECT && decls[i].port == BERTH_PORT_ANY;
        bind_any |= decls[i].kind == DECL_BIND && decls[i].port == BERTH_PORT_ANY;
    }
    struct sandbox_ruleset_attr attr = {.handled_access_fs = fs_handled(abi)};
    size_t attr_size = sizeof attr.handled_access_fs;
    if (abi >= 4) {
        attr.handled_access_net = (connect_any ? 0 : LANDLOCK_ACCESS_NET_CONNECT_TCP) |
                                  (bind_any ? 0 : LANDLOCK_ACCESS_NET_BIND_TCP);
        attr_size = offsetof(struct sandbox_ruleset_attr, scoped);
    }
    if (abi >= 6) {
        attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL;
        attr_size = sizeof attr;
    }
    ruleset_t rs = {.abi = abi, .fs = attr.handled_access_fs};
    rs.fd = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
    if (rs.fd < 0) {
        int e = errno;
        snprintf(why, whylen, "landlock_create_ruleset: %s", strerror(e));
        return -e;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof base_read / sizeof base_read[0]; i++)
        rc = add_path(&rs, base_read[i], FS_READ, 0);
    if (rc == 0)
        rc = add_path(&rs, "/dev/null", FS_READ | LANDLOCK_ACCESS_FS_WRITE_FILE, 0);
    /* A log file is reopened on SIGUSR1 after a rotation renamed it: the right is on its
     * folder, since a rule on the file would follow the old inode. */
    if (rc == 0 && w->cfg->log != NULL && w->cfg->log[0] == '/') {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", w->cfg->log);
        char *slash = strrchr(dir, '/');
        if (slash == dir) {
            /* A log right under / : a right on its folder would be one on every file of the
             * system. The file alone, then (a reopen after a rotation is refused). */
            rc = add_path(&rs, w->cfg->log, LANDLOCK_ACCESS_FS_WRITE_FILE, 0);
        } else {
            *slash = '\0';
            rc = add_path(&rs, dir, LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_MAKE_REG, 0);
        }
    }
    /* The name resolver: glibc asks the nameservers of resolv.conf over UDP, which Landlock
     * does not confine, and falls back to TCP port 53 for an answer too large for a datagram
     * (or with `options use-vc`). Every worker may resolve (host->connect, dgram_send, a
     * plugin's getaddrinfo on the pool), so it keeps that fallback whatever ports its
     * listeners declared: a rule on a port, not on the servers (Landlock has no address
     * rules), which lets a worker reach no protocol it could not already speak over UDP. */
    if (rc == 0 && (attr.handled_access_net & LANDLOCK_ACCESS_NET_CONNECT_TCP)) {
        rc = add_port(&rs, LANDLOCK_ACCESS_NET_CONNECT_TCP, SANDBOX_RESOLVER_PORT);
        if (rc)
            snprintf(why, whylen, "the resolver's port %d: %s", SANDBOX_RESOLVER_PORT,
                     strerror(-rc));
    }
    for (size_t i = 0; rc == 0 && i < ndecls; i++) {
        const decl_t *d = &decls[i];
        if (!serves(w, d->l))
            continue;
        if (d->kind == DECL_PATH) {
            uint64_t r = ((d->access & BERTH_ACCESS_READ) ? FS_READ : 0) |
                         ((d->access & BERTH_ACCESS_WRITE) ? FS_WRITE : 0);
            rc = add_path(&rs, d->path, r, 1);
            if (rc)
                snprintf(why, whylen, "[%s]: %s: %s", d->l->cfg->name, d->path, strerror(-rc));
        } else if (abi >= 4 && d->port != BERTH_PORT_ANY) {
            uint64_t right = d->kind == DECL_CONNECT ? LANDLOCK_ACCESS_NET_CONNECT_TCP
                                                     : LANDLOCK_ACCESS_NET_BIND_TCP;
            if (right & attr.handled_access_net)
                rc = add_port(&rs, right, d->port);
            if (rc)
                snprintf(why, whylen, "[%s]: port %d: %s", d->l->cfg->name, d->port, strerror(-rc));
        }
    }
    if (rc == 0 && syscall(SYS_landlock_restrict_self, rs.fd, 0) < 0) {
        rc = -errno;
        snprintf(why, whylen, "landlock_restrict_self: %s", strerror(-rc));
    } else if (rc && why[0] == '\0') {
        snprintf(why, whylen, "landlock_add_rule: %s", strerror(-rc));
    }
    close(rs.fd);
    *rules = rs.rules;
    return rc;
}

/* ---- seccomp ---- */

/* What no worker needs and an attacker in one wants: running programs, reading or writing
 * other processes, the kernel's bigger attack surfaces (mount, bpf, perf, modules, keyrings,
 * new namespaces), and calls that need privileges a worker never has. */
static const char *const denied_calls[] = {
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "bpf",
    "perf_event_open",
    "init_module",
    "finit_module",
    "delete_module",
    "add_key",
    "request_key",
    "keyctl",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "setns",
    "unshare",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
    "acct",
    "quotactl",
    "syslog",
    "lookup_dcookie",
    "kcmp",
    "uselib",
    "vhangup",
    "fanotify_init",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
};

static int seccomp_apply(int kill, char *why, size_t whylen)
{
    uint32_t deny = kill ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_ERRNO(EPERM);
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == NULL) {
        snprintf(why, whylen, "seccomp_init failed");
        return -ENOMEM;
    }
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    /* Cost: a filter is run on every system call, so a binary tree rather than a list; and
     * no Speculative Store Bypass mitigation for the worker (the kernel turns it on for a
     * process with a filter unless told not to, and it slowed socks5's splice relay by a
     * third here): it guards a process against code speculating inside it, and the attacker
     * this sandbox assumes already runs code there. systemd's filters do the same. */
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_SSB, 1);
    for (size_t i = 0; rc == 0 && i < sizeof denied_calls / sizeof denied_calls[0]; i++) {
#ifdef SANDBOX_SANITIZED
        /* LeakSanitizer stops the world with ptrace at exit. */
        if (strcmp(denied_calls[i], "ptrace") == 0)
            continue;
#endif
        int nr = seccomp_syscall_resolve_name(denied_calls[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a call of this architecture */
        rc = seccomp_rule_add(ctx, deny, nr, 0);
    }
    /* New user namespaces through clone(); clone3 hides its flags in memory a filter cannot
     * read, so it answers ENOSYS, and glibc falls back to clone for its threads. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    if (rc == 0 && seccomp_syscall_resolve_name("clone3") != __NR_SCMP_ERROR)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name("clone3"),
                              0);
    if (rc == 0)
        rc = seccomp_load(ctx);
    if (rc)
        snprintf(why, whylen, "seccomp: %s", strerror(-rc));
    seccomp_release(ctx);
    return rc;
}

/* ---- applying and describing ---- */

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[128];
    int n = 1;
    if (f == NULL)
        return 1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

int sandbox_apply(worker_t *w, sandbox_result_t *res, char *why, size_t whylen)
{
    memset(res, 0, sizeof *res);
    why[0] = '\0';
    if (w->cfg->sandbox_off)
        return 0;
    int threads = thread_count();
    if (threads > 1)
        log_warn("sandbox: %d threads already run (a plugin started them): Landlock does not "
                 "confine them, seccomp does",
                 threads - 1);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        int e = errno;
        snprintf(why, whylen, "PR_SET_NO_NEW_PRIVS: %s", strerror(e));
        return -e;
    }
    int abi = sandbox_landlock_abi();
    if (abi > 0) {
        int rc = landlock_apply(w, abi, &res->rules, why, whylen);
        if (rc)
            return rc;
        res->landlock_abi = abi;
    }
    int rc = seccomp_apply(w->cfg->sandbox_kill, why, whylen);
    if (rc)
        return rc;
    res->seccomp = 1;
    applied = 1;
    return 0;
}

int sandbox_describe(const berth_config_t *cfg, char *out, size_t len)
{
    const char *on_violation = cfg->sandbox_kill ? "kill" : "eperm";
    if (cfg->sandbox_off) {
        snprintf(out, len, "sandbox off (sandbox = off): workers are not confined");
        return 0;
    }
    int abi = sandbox_landlock_abi();
    if (abi == 0) {
        snprintf(out, len,
                 "sandbox on: seccomp deny-list (%s); no Landlock (the kernel has it disabled or "
                 "is older than 5.13): files and TCP are not confined",
                 on_violation);
        return 1;
    }
    snprintf(out, len, "sandbox on: Landlock ABI %d (files%s%s), seccomp deny-list (%s)%s", abi,
             abi >= 4 ? ", TCP bind and connect" : "", abi >= 6 ? ", signals" : "", on_violation,
             abi < 4 ? "; TCP is not confined (Landlock ABI 4, Linux 6.7, needed)" : "");
    return abi < 4;
}
