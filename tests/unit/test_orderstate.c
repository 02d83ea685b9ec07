/* tests/unit/test_orderstate.c: the order state machine decides every case once. */
#include "check.h"
#include "store/orderstate.h"

int main(void)
{
    enum order_status s;

    CHECK_INT_EQ(orderstate_decide(ORDER_PENDING, PAY_EVENT_SUCCEEDED, 1, 0), ORDER_DECIDE_PAY);
    CHECK_INT_EQ(orderstate_decide(ORDER_PENDING, PAY_EVENT_SUCCEEDED, 0, 0),
                 ORDER_DECIDE_AMOUNT_MISMATCH);
    CHECK_INT_EQ(orderstate_decide(ORDER_PENDING, PAY_EVENT_FAILED, 1, 0), ORDER_DECIDE_RECORD);
    CHECK_INT_EQ(orderstate_decide(ORDER_PENDING, PAY_EVENT_PROCESSING, 1, 0), ORDER_DECIDE_RECORD);
    /* late failure / cancel / processing never move a paid order back */
    CHECK_INT_EQ(orderstate_decide(ORDER_PAID, PAY_EVENT_FAILED, 1, 1), ORDER_DECIDE_RECORD);
    CHECK_INT_EQ(orderstate_decide(ORDER_PAID, PAY_EVENT_CANCELED, 1, 1), ORDER_DECIDE_RECORD);
    CHECK_INT_EQ(orderstate_decide(ORDER_PAID, PAY_EVENT_PROCESSING, 1, 1), ORDER_DECIDE_RECORD);
    CHECK_INT_EQ(orderstate_decide(ORDER_PAID, PAY_EVENT_SUCCEEDED, 1, 1),
                 ORDER_DECIDE_ALREADY_PAID);
    CHECK_INT_EQ(orderstate_decide(ORDER_PAID, PAY_EVENT_SUCCEEDED, 1, 0),
                 ORDER_DECIDE_DUPLICATE_PAYMENT);
    CHECK_INT_EQ(orderstate_decide(ORDER_CLOSED, PAY_EVENT_SUCCEEDED, 1, 0),
                 ORDER_DECIDE_PAID_AFTER_CLOSE);
    CHECK_INT_EQ(orderstate_decide(ORDER_CLOSED, PAY_EVENT_FAILED, 1, 0), ORDER_DECIDE_RECORD);
    CHECK_INT_EQ(orderstate_decide(ORDER_REFUNDED, PAY_EVENT_SUCCEEDED, 1, 0),
                 ORDER_DECIDE_DUPLICATE_PAYMENT);

    CHECK(orderstate_can_transition(ORDER_PENDING, ORDER_PAID));
    CHECK(orderstate_can_transition(ORDER_PENDING, ORDER_CLOSED));
    CHECK(orderstate_can_transition(ORDER_PAID, ORDER_REFUNDED));
    CHECK(!orderstate_can_transition(ORDER_PAID, ORDER_PENDING));
    CHECK(!orderstate_can_transition(ORDER_CLOSED, ORDER_PAID));
    CHECK(!orderstate_can_transition(ORDER_REFUNDED, ORDER_PAID));

    CHECK_STR_EQ(orderstate_name(ORDER_PAID), "PAID");
    CHECK_INT_EQ(orderstate_parse("CLOSED", &s), 0);
    CHECK_INT_EQ(s, ORDER_CLOSED);
    CHECK_INT_EQ(orderstate_parse("paid", &s), -1);
    CHECK_STR_EQ(orderstate_decision_name(ORDER_DECIDE_PAY), "applied");
    TEST_PASS();
    return 0;
}
