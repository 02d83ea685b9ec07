/* store/orderstate.c: the order state machine tables and the decision function. */
#include "store/orderstate.h"

#include <string.h>

static const char *const status_names[] = {
#define X(s) #s,
    ORDER_STATUSES(X)
#undef X
};

static const struct {
    enum order_status from, to;
} transitions[] = {
#define X(f, t) {ORDER_##f, ORDER_##t},
    ORDER_TRANSITIONS(X)
#undef X
};

static const char *const decision_names[] = {
#define X(d, s) s,
    ORDER_DECISIONS(X)
#undef X
};

const char *orderstate_name(enum order_status s)
{
    return (unsigned)s < ORDER_STATUS_COUNT ? status_names[s] : "?";
}

int orderstate_parse(const char *name, enum order_status *out)
{
    for (int i = 0; i < ORDER_STATUS_COUNT; i++)
        if (strcmp(name, status_names[i]) == 0) {
            *out = (enum order_status)i;
            return 0;
        }
    return -1;
}

int orderstate_can_transition(enum order_status from, enum order_status to)
{
    for (size_t i = 0; i < sizeof(transitions) / sizeof(transitions[0]); i++)
        if (transitions[i].from == from && transitions[i].to == to)
            return 1;
    return 0;
}

const char *orderstate_decision_name(enum order_decision d)
{
    return decision_names[d];
}

enum order_decision orderstate_decide(enum order_status s, enum pay_event_kind k, int amount_ok,
                                      int same_txn)
{
    if (k != PAY_EVENT_SUCCEEDED)
        return ORDER_DECIDE_RECORD; /* late failures never move a paid order back */
    switch (s) {
    case ORDER_PENDING:
        return amount_ok ? ORDER_DECIDE_PAY : ORDER_DECIDE_AMOUNT_MISMATCH;
    case ORDER_PAID:
    case ORDER_REFUNDED:
        return same_txn ? ORDER_DECIDE_ALREADY_PAID : ORDER_DECIDE_DUPLICATE_PAYMENT;
    case ORDER_CLOSED:
        return ORDER_DECIDE_PAID_AFTER_CLOSE;
    default:
        return ORDER_DECIDE_RECORD;
    }
}
