/* store/orderstate.h: the order state machine: the single place that decides what a
 * provider event does to an order. Pure. States and transitions are X-macro tables.
 *
 *   PENDING --SUCCEEDED, amount+currency match--> PAID --refund done--> REFUNDED
 *      |
 *      +--close (expiry / business)--> CLOSED
 *
 * Everything else is recorded in the payment log and never moves an order backwards. */
#ifndef PAYNOTIFY_STORE_ORDERSTATE_H
#define PAYNOTIFY_STORE_ORDERSTATE_H

#include "channel/channel.h"

#define ORDER_STATUSES(X) X(PENDING) X(PAID) X(CLOSED) X(REFUNDED)

enum order_status {
#define X(s) ORDER_##s,
    ORDER_STATUSES(X)
#undef X
        ORDER_STATUS_COUNT
};

/* from, to */
#define ORDER_TRANSITIONS(X) X(PENDING, PAID) X(PENDING, CLOSED) X(PAID, REFUNDED)

/* What applying one provider event to one order means. */
#define ORDER_DECISIONS(X)                                                                       \
    X(PAY, "applied")                         /* PENDING -> PAID, notify order.paid */           \
    X(RECORD, "recorded")                     /* logged only: failed/processing/other events */  \
    X(ALREADY_PAID, "already_paid")           /* same transaction seen under another event id */ \
    X(AMOUNT_MISMATCH, "amount_mismatch")     /* never PAID; alert */                            \
    X(DUPLICATE_PAYMENT, "duplicate_payment") /* second, different transaction; refund+alert */  \
    X(PAID_AFTER_CLOSE, "paid_after_close")   /* refund + alert, order stays CLOSED */

enum order_decision {
#define X(d, s) ORDER_DECIDE_##d,
    ORDER_DECISIONS(X)
#undef X
};

const char *orderstate_name(enum order_status s);
/* -1 when the name is not a status. */
int orderstate_parse(const char *name, enum order_status *out);
int orderstate_can_transition(enum order_status from, enum order_status to);
/* Payment-log outcome string of a decision. */
const char *orderstate_decision_name(enum order_decision d);
/* amount_ok: amount and currency equal the order's; same_txn: the event's transaction is
 * the one the order was paid with. */
enum order_decision orderstate_decide(enum order_status s, enum pay_event_kind k, int amount_ok,
                                      int same_txn);

#endif
