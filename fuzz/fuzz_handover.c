/* The binary upgrade's handover document (master/handover.c): handover_parse over any bytes;
 * what it accepts must write back and read again to the same thing. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "master/handover.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static handover_t a, b;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > HANDOVER_TEXT_MAX)
        return 0;
    char *buf = malloc(size ? size : 1); /* exact size: ASan sees a read past the end */
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    char err[256];
    int rc = handover_parse(buf, size, &a, err, sizeof err);
    free(buf);
    if (rc) {
        assert(err[0] != '\0');
        return 0;
    }
    assert(a.nsocks <= BERTH_MAX_LISTENERS && a.ngens <= HANDOVER_MAX_GENS &&
           a.npassed <= BERTH_MAX_LISTENERS);
    int fd = handover_write(&a);
    if (fd < 0)
        return 0;
    rc = handover_read(fd, &b, err, sizeof err);
    close(fd);
    assert(rc == 0);
    assert(a.nsocks == b.nsocks && a.ngens == b.ngens && a.nworkers == b.nworkers);
    assert(a.stats_fd == b.stats_fd && a.stats_size == b.stats_size);
    assert(a.reply_fd == b.reply_fd && a.rollback_fd == b.rollback_fd);
    for (size_t i = 0; i < a.nsocks; i++)
        assert(a.socks[i].fd == b.socks[i].fd && a.socks[i].addrlen == b.socks[i].addrlen &&
               memcmp(&a.socks[i].addr, &b.socks[i].addr, a.socks[i].addrlen) == 0);
    assert(a.metrics_fd == b.metrics_fd && a.agent_fd == b.agent_fd && a.npassed == b.npassed);
    assert(strcmp(a.metrics_at, b.metrics_at) == 0 && strcmp(a.agent_at, b.agent_at) == 0);
    for (size_t i = 0; i < a.npassed; i++)
        assert(a.passed[i].fd == b.passed[i].fd && strcmp(a.passed[i].name, b.passed[i].name) == 0);
    for (size_t i = 0; i < a.nworkers; i++)
        assert(a.workers[i].pid == b.workers[i].pid && a.workers[i].ctl_fd == b.workers[i].ctl_fd);
    return 0;
}
