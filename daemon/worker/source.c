/* Per-source limits of a listener (see source.h). */
#include "worker/source.h"

#include "core/limits.h"

int source_limited(const berth_listener_t *l)
{
    return l->cfg->per_source || l->cfg->rate;
}

int source_admit(berth_listener_t *l, const struct sockaddr *peer, int32_t *entry)
{
    *entry = -1;
    if (!source_limited(l))
        return 0;
    const config_listener_t *cfg = l->cfg;
    limits_rule_t r = {
        .per_source = cfg->per_source,
        .rate = cfg->rate,
        .burst = cfg->burst,
        .prefix6 = cfg->per_source_prefix6,
        .listener = l->slot,
        .name = cfg->name,
        .full_closed = l->w->cfg->per_source_table_full_closed,
    };
    if (limits_admit(&r, l->w->slot, peer, entry) == LIMITS_OK)
        return 0;
    atomic_fetch_add(&l->st->refused_source, 1);
    return -1;
}
