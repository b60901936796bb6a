#include "master/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/limits.h"
#include "core/log.h"
#include "core/notify.h"
#include "master/activation.h"
#include "master/agent.h"
#include "master/generation.h"
#include "master/handover.h"
#include "master/mcast.h"
#include "master/metrics.h"

/* A generation handed over by the previous image: workers this image only supervises. */
typedef struct adopted {
    ho_gen_t gen;
    uint64_t kill_at;
    size_t nworkers;
    ho_worker_t *workers; /* pid 0: gone */
} adopted_t;

typedef struct upgrade {
    char exe[PATH_MAX];
    char admin_path[108];
    int self_fd;       /* this image, for a rollback from the next one; -1 */
    int rollback_fd;   /* the previous image (started by a handover, not yet ready); -1 */
    char failed[1024]; /* this image is a rollback: why the newer one could not start */
    char from[64];
    int reply_fd; /* a berthctl upgrade connection handed over, waiting for the outcome */
    /* what the previous image handed that an older release does not: a rollback to it
     * hands over only these (it would not know the others, and they would hold its ports) */
    int had_metrics, had_agent, had_passed;
    adopted_t gens[HANDOVER_MAX_GENS];
    size_t ngens;
    size_t adopted_socks[BERTH_MAX_LISTENERS]; /* registry indices holding one user for them */
    size_t nsocks;
    /* the check of the new binary, in progress */
    pid_t check_pid;
    int check_out;
    uv_poll_t *check_poll;
    char output[UPGRADE_OUTPUT_MAX];
    size_t outlen;
    uint64_t check_deadline;
    admin_done_cb done;
    void *done_arg;
    int client_fd;
    /* checked: the exec waits (at most UPGRADE_QUIET_MS) for the scrapes in progress */
    int exec_pending;
    uint64_t exec_deadline;
    handover_t ho; /* scratch: large, kept off the stack */
} upgrade_t;

static upgrade_t *up_get(master_t *m)
{
    if (m->up == NULL) {
        m->up = calloc(1, sizeof *m->up);
        if (m->up) {
            m->up->self_fd = m->up->rollback_fd = m->up->reply_fd = -1;
            m->up->check_out = m->up->client_fd = -1;
        }
    }
    return m->up;
}

int upgrade_init(master_t *m, const char *admin_path)
{
    upgrade_t *u = up_get(m);
    if (u == NULL)
        return -ENOMEM;
    snprintf(u->admin_path, sizeof u->admin_path, "%s", admin_path ? admin_path : "");
    if (u->exe[0] == '\0') {
        ssize_t n = readlink("/proc/self/exe", u->exe, sizeof u->exe - 1);
        if (n <= 0)
            return -errno;
        u->exe[n] = '\0';
    }
    if (u->self_fd < 0)
        u->self_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    return u->self_fd < 0 ? -errno : 0;
}

static void set_cloexec(int fd, int on)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        fcntl(fd, F_SETFD, on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC);
}

/* ---- the image that was started by a handover ---- */

static void go_back_early(master_t *m, const char *why);

static int adopt_early(master_t *m, char *err, size_t errlen)
{
    upgrade_t *u = m->up;
    handover_t *h = &u->ho;
    int rc;
    /* socket activation: systemd's sockets, held for the master's life, before the config's
     * first check looks for them */
    for (size_t i = 0; i < h->npassed; i++)
        if ((rc = activation_adopt(h->passed[i].fd, h->passed[i].name)) != 0) {
            snprintf(err, errlen, "the sockets systemd passed: %s", strerror(-rc));
            return rc;
        }
    m->next_generation = h->next_generation;
    m->stats = stats_adopt(h->stats_fd, h->stats_size);
    if (m->stats == NULL) {
        snprintf(err, errlen, "the counters of berthd %s have another layout (%zu bytes, %zu here)",
                 h->from, h->stats_size, sizeof(stats_t));
        return -EPROTO;
    }
    size_t limits_len = h->limits_len;
#ifdef BERTH_UPGRADE_TEST_HOOKS
    /* Test builds only (cmake -DBERTH_UPGRADE_TEST_HOOKS=ON, docs/upgrade.md): an image of
     * this version is handed a per-source table of another length, which limits_adopt
     * refuses as another release's layout. */
    const char *fail = getenv("BERTH_TEST_UPGRADE_ADOPT_FAIL");
    if (fail && strcmp(fail, BERTH_VERSION) == 0)
        limits_len += 64;
#endif
    if (h->limits_fd >= 0 && (rc = limits_adopt(h->limits_fd, limits_len, h->limits_entries))) {
        snprintf(err, errlen, "the per-source table of berthd %s: %s", h->from, strerror(-rc));
        return rc;
    }
    return 0;
}

int upgrade_adopt_early(master_t *m, int fd, char *err, size_t errlen)
{
    upgrade_t *u = up_get(m);
    if (u == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    handover_t *h = &u->ho;
    int rc = handover_read(fd, h, err, errlen);
    close(fd);
    if (rc)
        return rc;
    /* Whatever happens next, these must not leak into workers or a later exec. */
    int fds[HANDOVER_MAX_FDS];
    size_t nfds = handover_fds(h, fds, sizeof fds / sizeof fds[0]);
    for (size_t i = 0; i < nfds; i++)
        set_cloexec(fds[i], 1);
    u->had_metrics = h->metrics_fd >= 0;
    u->had_agent = h->agent_fd >= 0;
    u->had_passed = h->npassed > 0;
    snprintf(u->exe, sizeof u->exe, "%s", h->exe);
    snprintf(u->from, sizeof u->from, "%s", h->from);
    snprintf(u->failed, sizeof u->failed, "%s", h->failed);
    snprintf(u->admin_path, sizeof u->admin_path, "%s", h->admin_fd >= 0 ? h->admin_path : "");
    u->rollback_fd = h->rollback_fd;
    u->reply_fd = h->reply_fd;
    rc = adopt_early(m, err, errlen);
    if (rc)
        go_back_early(m, err); /* returns only if it cannot */
    return rc;
}

int upgrade_adopt(master_t *m, const admin_ops_t *ops, const agent_ops_t *agent_ops, char *err,
                  size_t errlen)
{
    upgrade_t *u = m->up;
    handover_t *h = &u->ho;
    uint64_t now = uv_now(&m->loop);
    /* What can fail for memory first, while nothing handed over is in use yet: a failure
     * hands the document back as it came (go_back_early), not a part of it. */
    ho_worker_t *workers[HANDOVER_MAX_GENS] = {0};
    char *names[BERTH_MAX_LISTENERS][2] = {{0}};
    int short_of_memory = 0;
    for (size_t k = 0; k < h->ngens && k < HANDOVER_MAX_GENS; k++)
        short_of_memory |=
            (workers[k] = calloc(h->nworkers ? h->nworkers : 1, sizeof **workers)) == NULL;
    for (size_t i = 0; i < h->nsocks && i < BERTH_MAX_LISTENERS; i++) {
        names[i][0] = strdup(h->socks[i].address);
        names[i][1] = strdup(h->socks[i].name);
        short_of_memory |= names[i][0] == NULL || names[i][1] == NULL;
    }
    if (short_of_memory) {
        for (size_t k = 0; k < HANDOVER_MAX_GENS; k++)
            free(workers[k]);
        for (size_t i = 0; i < BERTH_MAX_LISTENERS; i++) {
            free(names[i][0]);
            free(names[i][1]);
        }
        snprintf(err, errlen, "out of memory for what berthd %s handed over", h->from);
        go_back_early(m, err); /* returns only if it cannot */
        return -ENOMEM;
    }
    for (size_t i = 0; i < h->nsocks && i < BERTH_MAX_LISTENERS; i++) {
        const ho_sock_t *hs = &h->socks[i];
        lsock_t *s = &m->socks.socks[i];
        s->protocol = (berth_protocol_t)hs->protocol;
        s->addr = hs->addr;
        s->addrlen = hs->addrlen;
        s->address = names[i][0];
        s->name = names[i][1];
        s->fd = hs->fd;
        s->slot = hs->slot;
        s->users = 1; /* the adopted generations' */
        s->dev = (dev_t)hs->dev;
        s->ino = (ino_t)hs->ino;
        s->quarantined = hs->quarantined;
        if (s->quarantined)
            snprintf(s->why, sizeof s->why, "quarantined before the upgrade");
        snprintf(s->bound, sizeof s->bound, "%s", hs->bound);
        u->adopted_socks[u->nsocks++] = i;
        m->socks.n = i + 1;
    }
    for (size_t k = 0; k < h->ngens; k++) {
        adopted_t *a = &u->gens[u->ngens];
        a->gen = h->gens[k];
        a->kill_at = a->gen.state == HO_DRAINING && a->gen.kill_in_ms ? now + a->gen.kill_in_ms : 0;
        a->workers = workers[k];
        for (size_t i = 0; i < h->nworkers; i++)
            if (h->workers[i].gen == a->gen.id)
                a->workers[a->nworkers++] = h->workers[i];
        u->ngens++;
        log_info("adopted generation %u of berthd %s (%zu worker(s), %s)", a->gen.id,
                 a->gen.version, a->nworkers, a->gen.state == HO_SERVING ? "serving" : "draining");
    }
    if (h->admin_fd >= 0) {
        config_errors_t errs = {0};
        m->admin = admin_adopt(&m->loop, h->admin_path, h->admin_fd, ops, m, &errs);
        if (m->admin == NULL || errs.count) {
            snprintf(err, errlen, "admin socket: %s", errs.count ? errs.msgs[0] : "out of memory");
            config_errors_free(&errs);
            return -EINVAL;
        }
    }
    /* The /metrics and agent-check listeners: connections that came during the exec waited
     * in their backlogs. The config decides afterwards whether they stay (master.c). */
    char why[256];
    if (h->metrics_fd >= 0) {
        m->metrics = metrics_adopt(&m->loop, h->metrics_fd, m->stats, why, sizeof why);
        m->metrics_at = m->metrics ? strdup(h->metrics_at) : NULL;
        if (m->metrics == NULL || m->metrics_at == NULL) {
            snprintf(err, errlen, "metrics %s: %s", h->metrics_at,
                     m->metrics ? "out of memory" : why);
            return -EINVAL;
        }
    }
    if (h->agent_fd >= 0) {
        m->agent = agent_adopt(&m->loop, h->agent_fd, h->agent_at, agent_ops, m, why, sizeof why);
        if (m->agent == NULL) {
            snprintf(err, errlen, "agent %s: %s", h->agent_at, why);
            return -EINVAL;
        }
    }
    if (u->failed[0])
        log_error("upgrade failed, berthd %s goes on: %s", BERTH_VERSION, u->failed);
    else
        log_info("upgrading from berthd %s to %s (pid %d)", u->from, BERTH_VERSION, (int)getpid());
    return 0;
}

void upgrade_adopt_groups(master_t *m, const berth_config_t *cfg)
{
    upgrade_t *u = m->up;
    for (size_t k = 0; u && k < u->nsocks; k++) {
        lsock_t *s = &m->socks.socks[u->adopted_socks[k]];
        for (size_t i = 0; s->fd >= 0 && i < cfg->nlisteners; i++) {
            const config_listener_t *l = &cfg->listeners[i];
            if (l->protocol == BERTH_PROTO_UDP && listen_same(s, l) && l->mcast.ngroups) {
                s->mcast = l->mcast;
                mcast_describe(&l->mcast, s->groups, sizeof s->groups);
            }
        }
    }
}

static void reply(upgrade_t *u, int ok, const char *text)
{
    if (u->reply_fd < 0)
        return;
    char buf[1500];
    int n = snprintf(buf, sizeof buf, "%s\n%s\n", ok ? "ok" : "error", text);
    if (n > (int)sizeof buf - 1)
        n = (int)sizeof buf - 1;
    /* A small answer to a unix socket: it fits the buffer; never block the loop on it. */
    if (send(u->reply_fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        log_debug("upgrade: cannot answer berthctl: %s", strerror(errno));
    shutdown(u->reply_fd, SHUT_WR);
    close(u->reply_fd);
    u->reply_fd = -1;
}

static void sock_users_release(master_t *m)
{
    upgrade_t *u = m->up;
    for (size_t k = 0; k < u->nsocks; k++)
        sockets_release(&m->socks, u->adopted_socks[k]);
    u->nsocks = 0;
}

unsigned upgrade_alive(const master_t *m)
{
    unsigned n = 0;
    for (size_t g = 0; m->up && g < m->up->ngens; g++)
        for (size_t i = 0; i < m->up->gens[g].nworkers; i++)
            n += m->up->gens[g].workers[i].pid > 0;
    return n;
}

int upgrade_serving(const master_t *m)
{
    for (size_t g = 0; m->up && g < m->up->ngens; g++)
        if (m->up->gens[g].gen.state == HO_SERVING)
            return 1;
    return 0;
}

static void adopted_stop(master_t *m, adopted_t *a, int now)
{
    uint32_t type = now ? CTL_STOP_NOW : CTL_STOP;
    uint64_t grace =
        (now ? 0 : (m->active ? m->active->cfg->shutdown_timeout : 30000)) + KILL_GRACE_MS;
    uint64_t at = uv_now(&m->loop) + grace;
    if (a->gen.state == HO_SERVING || now) {
        for (size_t i = 0; i < a->nworkers; i++) {
            ho_worker_t *w = &a->workers[i];
            if (w->pid <= 0)
                continue;
            ctl_send(w->ctl_fd, type, NULL);
            atomic_store(&m->stats->workers[w->slot].state, WORKER_DRAINING);
        }
        if (a->kill_at == 0 || at < a->kill_at)
            a->kill_at = at;
    }
    a->gen.state = HO_DRAINING;
}

void upgrade_on_ready(master_t *m)
{
    upgrade_t *u = m->up;
    if (u == NULL)
        return;
    char msg[1200];
    if (u->failed[0])
        snprintf(msg, sizeof msg, "upgrade failed: %s; berthd %s goes on serving (generation %u)",
                 u->failed, BERTH_VERSION, m->active ? m->active->id : 0);
    else
        snprintf(msg, sizeof msg, "upgraded from berthd %s to %s: generation %u serves",
                 u->from[0] ? u->from : "?", BERTH_VERSION, m->active ? m->active->id : 0);
    for (size_t g = 0; g < u->ngens; g++)
        if (u->gens[g].gen.state == HO_SERVING) {
            log_info("generation %u (berthd %s) drains", u->gens[g].gen.id, u->gens[g].gen.version);
            adopted_stop(m, &u->gens[g], 0);
        }
    if (u->failed[0] || u->from[0] || u->reply_fd >= 0) {
        if (u->failed[0])
            log_error("%s", msg);
        else
            log_info("%s", msg);
        reply(u, !u->failed[0], msg);
    }
    u->failed[0] = '\0';
    /* Ready: there is no going back to the previous image any more. */
    if (u->rollback_fd >= 0)
        close(u->rollback_fd);
    u->rollback_fd = -1;
    if (u->self_fd < 0)
        u->self_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (upgrade_alive(m) == 0)
        sock_users_release(m);
}

/* ---- handing over ---- */

static void ho_add_gen(handover_t *h, unsigned id, int state, uint64_t kill_in, const char *version)
{
    if (h->ngens == HANDOVER_MAX_GENS) {
        h->nworkers = STATS_WORKERS + 1; /* marks it too big: see collect() */
        return;
    }
    ho_gen_t *g = &h->gens[h->ngens++];
    g->id = id;
    g->state = state;
    g->kill_in_ms = kill_in;
    snprintf(g->version, sizeof g->version, "%s", version);
}

static void ho_add_generation(handover_t *h, const generation_t *g, int state, uint64_t now)
{
    if (h->nworkers > STATS_WORKERS)
        return;
    size_t before = h->nworkers;
    for (unsigned i = 0; i < g->nworkers && h->nworkers < STATS_WORKERS; i++) {
        const wproc_t *wp = &g->workers[i];
        if (wp->state == W_DEAD || wp->pid <= 0 || wp->ctl_fd < 0 || wp->slot < 0)
            continue;
        h->workers[h->nworkers++] = (ho_worker_t){.gen = g->id,
                                                  .index = wp->index,
                                                  .group = wp->group,
                                                  .pid = wp->pid,
                                                  .ctl_fd = wp->ctl_fd,
                                                  .slot = wp->slot};
    }
    if (h->nworkers == before)
        return;
    uint64_t kill_in = g->kill_at > now ? g->kill_at - now : (g->kill_at ? 1 : 0);
    ho_add_gen(h, g->id, state, kill_in, BERTH_VERSION);
}

/* Everything this image holds, as a handover for `exe` (rollback_fd: the image to go back to,
 * -1 for none; back: a rollback, to the image that handed this one over). 0, or -E2BIG when
 * more generations are alive than a handover carries. */
static int collect(master_t *m, handover_t *h, int rollback_fd, const char *failed, int back)
{
    upgrade_t *u = m->up;
    uint64_t now = uv_now(&m->loop);
    handover_init(h);
    h->format = HANDOVER_FORMAT;
    snprintf(h->from, sizeof h->from, "%s", BERTH_VERSION);
    snprintf(h->exe, sizeof h->exe, "%s", u->exe);
    snprintf(h->failed, sizeof h->failed, "%s", failed ? failed : "");
    h->next_generation = m->next_generation;
    h->stats_fd = stats_fd();
    h->stats_size = sizeof(stats_t);
    h->limits_fd = limits_fd(&h->limits_len);
    h->limits_entries = limits_size();
    h->admin_fd = admin_fd(m->admin);
    snprintf(h->admin_path, sizeof h->admin_path, "%s", u->admin_path);
    h->reply_fd = u->reply_fd >= 0 ? u->reply_fd : u->client_fd;
    h->rollback_fd = rollback_fd;
    /* Appended keys. Going back, only what the previous image handed over itself: a release
     * older than them would skip the lines and keep the sockets open, unused, holding the
     * address it binds again. Not listed, they close at the exec (close-on-exec). */
    if (m->metrics && m->metrics_at && (!back || u->had_metrics)) {
        h->metrics_fd = metrics_fd(m->metrics);
        snprintf(h->metrics_at, sizeof h->metrics_at, "%s", m->metrics_at);
    }
    if (m->agent && (!back || u->had_agent)) {
        h->agent_fd = agent_fd(m->agent);
        snprintf(h->agent_at, sizeof h->agent_at, "%s", agent_at(m->agent));
    }
    for (size_t i = 0; i < activation_count() && (!back || u->had_passed); i++) {
        const char *name = NULL;
        int fd = activation_fd(i, &name);
        if (fd < 0)
            break;
        h->passed[h->npassed].fd = fd;
        snprintf(h->passed[h->npassed++].name, sizeof h->passed[0].name, "%s", name);
    }
    for (size_t i = 0; i < m->socks.n; i++) {
        const lsock_t *s = &m->socks.socks[i];
        if (s->fd < 0)
            continue;
        ho_sock_t *hs = &h->socks[h->nsocks++];
        hs->fd = s->fd;
        hs->slot = s->slot;
        hs->protocol = (int)s->protocol;
        hs->quarantined = s->quarantined;
        hs->dev = (unsigned long long)s->dev;
        hs->ino = (unsigned long long)s->ino;
        hs->addr = s->addr;
        hs->addrlen = s->addrlen;
        snprintf(hs->name, sizeof hs->name, "%s", s->name ? s->name : "?");
        snprintf(hs->address, sizeof hs->address, "%s", s->address ? s->address : "");
        snprintf(hs->bound, sizeof hs->bound, "%s", s->bound);
    }
    if (m->active)
        ho_add_generation(h, m->active, HO_SERVING, now);
    if (m->starting)
        ho_add_generation(h, m->starting, HO_DRAINING, now);
    for (const generation_t *g = m->old; g; g = g->next)
        ho_add_generation(h, g, HO_DRAINING, now);
    for (size_t k = 0; k < u->ngens && h->nworkers <= STATS_WORKERS; k++) {
        const adopted_t *a = &u->gens[k];
        size_t before = h->nworkers;
        for (size_t i = 0; i < a->nworkers && h->nworkers < STATS_WORKERS; i++)
            if (a->workers[i].pid > 0)
                h->workers[h->nworkers++] = a->workers[i];
        if (h->nworkers > before)
            ho_add_gen(h, a->gen.id, a->gen.state,
                       a->kill_at > now ? a->kill_at - now : (a->kill_at ? 1 : 0), a->gen.version);
    }
    return h->nworkers > STATS_WORKERS ? -E2BIG : 0;
}

/* Execute `exe` (or the image open at exec_fd) with the handover `h`. Returns only on
 * failure, -errno, with everything as it was. */
static int exec_handover(master_t *m, const handover_t *h, int exec_fd)
{
    upgrade_t *u = m->up;
    int hfd = handover_write(h);
    if (hfd < 0)
        return hfd;
    int fds[HANDOVER_MAX_FDS];
    size_t nfds = handover_fds(h, fds, sizeof fds / sizeof fds[0]);
    for (size_t i = 0; i < nfds; i++)
        set_cloexec(fds[i], 0);
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", hfd);
    char *argv[] = {u->exe, "-c", (char *)m->conf_path, "--handover", fdarg, NULL};
    /* systemd's socket activation variables described this process's first start: the
     * sockets they named come through the handover now, and numbers may have been reused. */
    extern char **environ;
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **envp = calloc(nenv + 1, sizeof *envp);
    if (envp == NULL) {
        for (size_t i = 0; i < nfds; i++)
            set_cloexec(fds[i], 1);
        close(hfd);
        return -ENOMEM;
    }
    for (size_t i = 0, k = 0; i < nenv; i++)
        if (strncmp(environ[i], "LISTEN_", 7) != 0)
            envp[k++] = environ[i];
    notify_reloading(); /* the new image says READY=1 once its generation serves */
    if (exec_fd >= 0)
        fexecve(exec_fd, argv, envp);
    else
        execve(u->exe, argv, envp);
    int e = errno;
    notify_ready();
    free(envp);
    for (size_t i = 0; i < nfds; i++)
        set_cloexec(fds[i], 1);
    close(hfd);
    return -e;
}

/* Execute `exe` (or the image open at exec_fd) with the handover of everything this image
 * holds. Returns only on failure, -errno, with everything as it was. */
static int exec_image(master_t *m, int exec_fd, int rollback_fd, const char *failed)
{
    handover_t *h = &m->up->ho;
    int rc = collect(m, h, rollback_fd, failed, exec_fd >= 0 && rollback_fd < 0);
    return rc ? rc : exec_handover(m, h, exec_fd);
}

/* This image failed while taking over (the per-source table, the counters, memory), before
 * it used anything handed over: the previous image gets back the very document it wrote,
 * with the reason (`failed`) and no rollback of its own, as after any later failure
 * (upgrade_on_failed). It adopts what it handed and starts a generation of its own binary
 * again. Returns only if it cannot be executed (then this image exits, as it had to before
 * there was a rollback). */
static void go_back_early(master_t *m, const char *why)
{
    upgrade_t *u = m->up;
    if (u->rollback_fd < 0)
        return;
    handover_t *h = &u->ho;
    log_error("berthd %s cannot take over; going back to berthd %s: %s", BERTH_VERSION, u->from,
              why);
    snprintf(h->failed, sizeof h->failed, "%s", why);
    snprintf(h->from, sizeof h->from, "%s", BERTH_VERSION);
    int fd = u->rollback_fd;
    h->rollback_fd = u->rollback_fd = -1;
    int rc = exec_handover(m, h, fd);
    log_error("cannot execute the previous image again: %s", strerror(-rc));
    close(fd);
}

static void check_finish(master_t *m, int ok, const char *text)
{
    upgrade_t *u = m->up;
    admin_done_cb done = u->done;
    void *arg = u->done_arg;
    u->done = NULL;
    u->done_arg = NULL;
    u->client_fd = -1;
    if (!ok)
        log_error("upgrade refused, berthd %s goes on serving: %s", BERTH_VERSION, text);
    if (done)
        done(arg, ok, text);
}

static void check_close_output(upgrade_t *u)
{
    if (u->check_poll) {
        uv_close((uv_handle_t *)u->check_poll, (uv_close_cb)free);
        u->check_poll = NULL;
    }
    if (u->check_out >= 0)
        close(u->check_out);
    u->check_out = -1;
}

static void check_read(upgrade_t *u)
{
    char buf[1024];
    ssize_t n;
    while (u->check_out >= 0 && (n = read(u->check_out, buf, sizeof buf)) > 0) {
        size_t room = sizeof u->output - 1 - u->outlen;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(u->output + u->outlen, buf, take);
        u->outlen += take;
        u->output[u->outlen] = '\0';
    }
}

static void on_check_output(uv_poll_t *p, int status, int events)
{
    upgrade_t *u = p->data;
    check_read(u);
}

void upgrade_begin(master_t *m, int client_fd, admin_done_cb done, void *arg)
{
    upgrade_t *u = up_get(m);
    const char *busy = u == NULL                             ? "out of memory"
                       : m->stopping                         ? "berthd is stopping"
                       : u->check_pid > 0 || u->exec_pending ? "an upgrade is in progress"
                       : m->starting || !m->active ? "a reload or an upgrade is in progress"
                       : u->exe[0] == '\0'         ? "the executable's path is not known"
                                                   : NULL;
    if (busy) {
        log_warn("upgrade refused: %s", busy);
        if (done)
            done(arg, 0, busy);
        return;
    }
    u->done = done;
    u->done_arg = arg;
    u->client_fd = client_fd;
    u->outlen = 0;
    u->output[0] = '\0';
    log_info("upgrade: checking %s with %s", u->exe, m->conf_path);
    /* The new binary reads this very handover (its format and counters layout), then checks
     * the config and loads the plugins, without touching anything of ours. */
    int hfd = collect(m, &u->ho, -1, NULL, 0);
    if (hfd == 0)
        hfd = handover_write(&u->ho);
    int pfd[2] = {-1, -1};
    if (hfd < 0 || pipe2(pfd, O_CLOEXEC) < 0) {
        int e = hfd < 0 ? -hfd : errno;
        if (hfd >= 0)
            close(hfd);
        char why[160];
        if (e == E2BIG)
            snprintf(why, sizeof why,
                     "more than %d generations are still draining; try again once they are done",
                     HANDOVER_MAX_GENS);
        else
            snprintf(why, sizeof why, "cannot prepare the check: %s", strerror(e));
        check_finish(m, 0, why);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(pfd[1], STDOUT_FILENO);
        dup2(pfd[1], STDERR_FILENO);
        dup2(hfd, 3);
        close_range(4, ~0u, 0);
        char *argv[] = {u->exe, "-c", (char *)m->conf_path, "--handover-check", "3", NULL};
        execv(u->exe, argv);
        dprintf(STDERR_FILENO, "cannot execute %s: %s\n", u->exe, strerror(errno));
        _exit(127);
    }
    int e = errno;
    close(pfd[1]);
    close(hfd);
    if (pid < 0) {
        close(pfd[0]);
        char why[128];
        snprintf(why, sizeof why, "fork: %s", strerror(e));
        check_finish(m, 0, why);
        return;
    }
    u->check_pid = pid;
    u->check_out = pfd[0];
    fcntl(u->check_out, F_SETFL, O_NONBLOCK);
    u->check_deadline = uv_now(&m->loop) + UPGRADE_CHECK_MS;
    u->check_poll = malloc(sizeof *u->check_poll);
    if (u->check_poll) {
        uv_poll_init(&m->loop, u->check_poll, u->check_out);
        u->check_poll->data = u;
        uv_poll_start(u->check_poll, UV_READABLE, on_check_output);
    }
}

static void exec_now(master_t *m)
{
    upgrade_t *u = m->up;
    u->exec_pending = 0;
    if (m->stopping || m->starting) {
        metrics_resume(m->metrics);
        check_finish(m, 0,
                     m->stopping ? "berthd is stopping"
                                 : "a reload started during the upgrade; try again after it");
        return;
    }
    log_info("upgrade: %s checked; executing it", u->exe);
    int rc = exec_image(m, -1, u->self_fd, NULL);
    char why[PATH_MAX + 128];
    snprintf(why, sizeof why, "cannot execute %s: %s", u->exe, strerror(-rc));
    metrics_resume(m->metrics);
    check_finish(m, 0, why);
}

static void on_quiet(void *arg)
{
    master_t *m = arg;
    if (m->up && m->up->exec_pending)
        exec_now(m);
}

static void check_exited(master_t *m, int status)
{
    upgrade_t *u = m->up;
    u->check_pid = 0;
    check_read(u);
    check_close_output(u);
    /* The check's own words, on one line each, trimmed. */
    while (u->outlen && (u->output[u->outlen - 1] == '\n' || u->output[u->outlen - 1] == ' '))
        u->output[--u->outlen] = '\0';
    char why[UPGRADE_OUTPUT_MAX + PATH_MAX + 256];
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && (m->stopping || m->starting)) {
        /* A reload's generation that has not started would be handed over with no one to
         * tell it to go or stop. */
        check_finish(m, 0,
                     m->stopping ? "berthd is stopping"
                                 : "a reload started during the check; try again after it");
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        /* The /metrics listener stops accepting (new scrapes wait in its backlog for the new
         * image) and the exec waits for the scrapes already accepted: the exec would cut
         * them. The agent-check answers at accept and keeps nothing open. */
        if (m->metrics && metrics_pause(m->metrics, on_quiet, m) == 0) {
            u->exec_pending = 1;
            u->exec_deadline = uv_now(&m->loop) + UPGRADE_QUIET_MS;
            log_debug("upgrade: %s checked; executing it once the scrapes in progress end", u->exe);
            return;
        }
        exec_now(m);
        return;
    }
    char how[96];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
    snprintf(why, sizeof why, "the new binary %s %s in its check%s%s", u->exe, how,
             u->outlen ? ":\n" : "", u->output);
    check_finish(m, 0, why);
}

int upgrade_reap(master_t *m, pid_t pid, int status)
{
    upgrade_t *u = m->up;
    if (u == NULL)
        return 0;
    if (u->check_pid > 0 && pid == u->check_pid) {
        check_exited(m, status);
        return 1;
    }
    for (size_t g = 0; g < u->ngens; g++) {
        adopted_t *a = &u->gens[g];
        for (size_t i = 0; i < a->nworkers; i++) {
            ho_worker_t *w = &a->workers[i];
            if (w->pid != pid)
                continue;
            if (a->gen.state == HO_SERVING || WIFSIGNALED(status))
                log_warn("worker %u of adopted generation %u (pid %d) %s %d", w->index + 1,
                         a->gen.id, (int)pid,
                         WIFSIGNALED(status) ? "killed by signal" : "exited with status",
                         WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            if (a->gen.state == HO_SERVING)
                atomic_fetch_add(&m->stats->worker_crashes, 1);
            stats_worker_settle(m->stats, w->slot);
            limits_settle(w->slot);
            close(w->ctl_fd);
            w->pid = 0;
            w->ctl_fd = -1;
            if (upgrade_alive(m) == 0) {
                log_debug("the adopted generations have drained");
                if (m->active)
                    sock_users_release(m);
            }
            return 1;
        }
    }
    return 0;
}

int upgrade_on_failed(master_t *m, const char *why)
{
    upgrade_t *u = m->up;
    if (u == NULL || u->ngens == 0)
        return 0;
    if (u->rollback_fd >= 0) {
        log_error("berthd %s cannot start; going back to berthd %s: %s", BERTH_VERSION, u->from,
                  why);
        int fd = u->rollback_fd;
        u->rollback_fd = -1;
        int rc = exec_image(m, fd, -1, why);
        log_error("cannot execute the previous image again: %s", strerror(-rc));
    }
    log_error("no generation of berthd %s could start: the adopted workers go on serving; fix "
              "the config and reload",
              BERTH_VERSION);
    char msg[1200];
    snprintf(msg, sizeof msg, "upgrade failed and could not roll back: %s", why);
    reply(u, 0, msg);
    notify_ready(); /* systemd was told RELOADING at the exec: the adopted workers serve */
    return upgrade_serving(m);
}

void upgrade_stop(master_t *m, int now)
{
    if (m->up && m->up->exec_pending) {
        m->up->exec_pending = 0;
        metrics_resume(m->metrics);
        check_finish(m, 0, "berthd is stopping");
    }
    if (m->up && m->up->check_pid > 0)
        kill(m->up->check_pid, SIGKILL);
    if (m->up)
        check_close_output(m->up);
    for (size_t g = 0; m->up && g < m->up->ngens; g++)
        adopted_stop(m, &m->up->gens[g], now);
}

void upgrade_tick(master_t *m, uint64_t now)
{
    upgrade_t *u = m->up;
    if (u == NULL)
        return;
    if (u->exec_pending && now >= u->exec_deadline) {
        log_warn("upgrade: scrapes of /metrics still open after %d ms; executing anyway",
                 UPGRADE_QUIET_MS);
        exec_now(m);
    }
    if (u->check_pid > 0 && now >= u->check_deadline) {
        log_error("upgrade: the check of %s did not end within %d s; killing it", u->exe,
                  UPGRADE_CHECK_MS / 1000);
        kill(u->check_pid, SIGKILL);
        u->check_deadline = UINT64_MAX;
    }
    for (size_t g = 0; g < u->ngens; g++) {
        adopted_t *a = &u->gens[g];
        if (a->kill_at == 0 || now < a->kill_at)
            continue;
        for (size_t i = 0; i < a->nworkers; i++)
            if (a->workers[i].pid > 0) {
                log_warn("worker %u of adopted generation %u (pid %d) did not drain in time; "
                         "killing it",
                         a->workers[i].index + 1, a->gen.id, (int)a->workers[i].pid);
                kill(a->workers[i].pid, SIGKILL);
            }
        a->kill_at = 0;
    }
}

void upgrade_snapshot(master_t *m, admin_snapshot_t *out)
{
    const size_t max = sizeof out->gen_ids / sizeof out->gen_ids[0];
    generation_t *lists[] = {m->active, m->starting, m->old};
    for (int k = 0; k < 3; k++)
        for (generation_t *g = lists[k]; g && out->ngens < max; g = k == 2 ? g->next : NULL)
            if (generation_alive(g)) {
                out->gen_ids[out->ngens] = g->id;
                out->gen_versions[out->ngens++] = BERTH_VERSION;
            }
    for (size_t g = 0; m->up && g < m->up->ngens && out->ngens < max; g++) {
        const adopted_t *a = &m->up->gens[g];
        int alive = 0;
        for (size_t i = 0; i < a->nworkers; i++)
            alive |= a->workers[i].pid > 0;
        if (alive) {
            out->gen_ids[out->ngens] = a->gen.id;
            out->gen_versions[out->ngens++] = a->gen.version;
        }
    }
}

void upgrade_free(master_t *m)
{
    upgrade_t *u = m->up;
    if (u == NULL)
        return;
    check_close_output(u);
    for (size_t g = 0; g < u->ngens; g++) {
        for (size_t i = 0; i < u->gens[g].nworkers; i++)
            if (u->gens[g].workers[i].ctl_fd >= 0)
                close(u->gens[g].workers[i].ctl_fd);
        free(u->gens[g].workers);
    }
    if (u->self_fd >= 0)
        close(u->self_fd);
    if (u->rollback_fd >= 0)
        close(u->rollback_fd);
    if (u->reply_fd >= 0)
        close(u->reply_fd);
    free(u);
    m->up = NULL;
}
