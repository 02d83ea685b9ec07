/* channel/channel.c: the table of provider modules, chosen by a channel's "type". */
#include "channel/channel.h"

#include <string.h>

#include "channel/stripe.h"

static const struct channel_ops *const channel_table[] = {
    &stripe_channel_ops,
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
