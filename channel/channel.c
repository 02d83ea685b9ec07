/* channel/channel.c: the table of provider modules, chosen by a channel's "type". */
#include "channel/channel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel/alipay.h"
#include "channel/stripe.h"
#include "channel/wechatpay.h"
#include "common/cfg.h"

static const struct channel_ops *const channel_table[] = {
    &alipay_channel_ops,
    &stripe_channel_ops,
    &wechatpay_channel_ops,
};

const struct channel_ops *channel_ops_for(const char *type)
{
    for (size_t i = 0; i < sizeof(channel_table) / sizeof(channel_table[0]); i++)
        if (strcmp(channel_table[i]->type, type) == 0)
            return channel_table[i];
    return NULL;
}

const char *pay_event_kind_name(enum pay_event_kind k)
{
    static const char *const names[] = {
#define X(k) #k,
        PAY_EVENT_KINDS(X)
#undef X
    };
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

struct channels {
    size_t n;
    struct channel *items;
};

channels *channels_load(const struct cfg *cfg, struct errbuf *e)
{
    channels *set = calloc(1, sizeof(*set));

    if (set == NULL || (set->items = calloc(cfg->n_channels + 1, sizeof(*set->items))) == NULL)
        abort();
    for (size_t i = 0; i < cfg->n_channels; i++) {
        const struct cfg_channel *cc = &cfg->channels[i];
        struct channel *ch = &set->items[i];
        char where[160];

        snprintf(where, sizeof(where), "channels.%s", cc->name);
        ch->name = cc->name;
        ch->ops = channel_ops_for(cc->type);
        if (ch->ops == NULL) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s.type: unsupported channel type \"%.32s\"", where,
                       cc->type);
            channels_free(set);
            return NULL;
        }
        ch->conf = ch->ops->config_load(cc->json, where, cc->base_dir, e);
        if (ch->conf == NULL) {
            channels_free(set);
            return NULL;
        }
        set->n = i + 1;
    }
    return set;
}

void channels_free(channels *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++)
        set->items[i].ops->config_free(set->items[i].conf);
    free(set->items);
    free(set);
}

const struct channel *channels_find(const channels *set, const char *name)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->items[i].name, name) == 0)
            return &set->items[i];
    return NULL;
}

size_t channels_index(const channels *set, const struct channel *ch)
{
    return (size_t)(ch - set->items);
}
