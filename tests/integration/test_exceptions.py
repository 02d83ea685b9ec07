"""tests/integration/test_exceptions.py: the seeds' payment exceptions (issue 5), each
producing exactly its rows, refund call, notification and alert, once: duplicate payment
(automatic refund through a local Stripe simulator), payment after close, amount
mismatch, unknown order; a refund provider outage; a worker killed -9 mid-way."""
import datetime
import time

from pnlib import Alerts, Env, Sink, StripeSim, check, eq, run, stripe_event, wait_for


class World:
    def __init__(self, name, extra_env=None):
        self.tmp = Env(name + "-fakes")
        self.alerts = Alerts(self.tmp.dir)
        self.stripe = StripeSim(self.tmp.dir)
        self.env = Env(name, dict({"PAYNOTIFY_SWEEP_INTERVAL": "1s"}, **(extra_env or {})),
                       alerts=self.alerts, stripe_api=self.stripe.channel)
        self.sink = Sink()
        self.env.start("paynotify-receiver")

    def alerts_naming(self, oid, kind, *details):
        """SMS texts are short (kind, business, order); emails carry the details."""
        sms = [m for m in self.alerts.sms_messages() if oid in m["text"] and kind in m["text"]]
        mail = [m for m in self.alerts.mails() if all(n in m for n in (oid, kind) + details)]
        return sms, mail

    def one_alert(self, oid, kind, *details, count=1):
        """count alerts of this kind for this order: one SMS and one email each."""
        wait_for(lambda: all(len(x) >= count for x in self.alerts_naming(oid, kind, *details)),
                 30, f"alert {kind} for {oid}")
        time.sleep(1.5)
        sms, mail = self.alerts_naming(oid, kind, *details)
        eq(len(sms), count, f"SMS about {kind} for {oid}")
        eq(len(mail), count, f"emails about {kind} for {oid}")

    def close(self):
        try:
            self.env.close()
        finally:
            self.sink.close()
            self.alerts.close()
            self.stripe.close()
            self.tmp.close()


def paid_order(w, amount=1250):
    env = w.env
    o = env.create_order(w.sink.url, amount=amount)
    txn = "pi_first_" + o["order_id"]
    eq(env.callback(stripe_event(o["order_id"], amount, "usd", txn=txn))[0], 200, "payment")
    wait_for(lambda: env.get_order(o["order_id"])["notify_status"] == "DELIVERED", 30, "paid")
    return o["order_id"], txn


def check_refund(w, oid, txn, amount, reason):
    env = w.env
    wait_for(lambda: env.scalar(f"SELECT status FROM refunds WHERE order_id='{oid}'")
             == "SUCCEEDED", 40, "refund SUCCEEDED")
    rows = env.sql(f"SELECT refund_id, provider_txn_id, amount, reason FROM refunds"
                   f" WHERE order_id='{oid}'")
    eq(len(rows), 1, "refund rows")
    refund_id = rows[0][0]
    eq(rows[0][1:], [txn, str(amount), reason], "refund row")
    refunds = [r for r in w.stripe.refunds() if r["payment_intent"] == txn]
    eq(len(refunds), 1, "refunds created at the provider")
    eq(refunds[0]["amount"], amount, "refunded amount")
    eq(refunds[0]["idempotency_key"], refund_id, "Idempotency-Key is the refund id")
    eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE kind='refund' AND"
                  f" provider_event_id='{refund_id}'"), "1", "refund in the payment log")
    return refund_id


def test_duplicate_payment_refunded_once():
    w = World("dup-payment")
    try:
        env = w.env
        env.start("paynotify-worker")
        oid, first = paid_order(w)
        second = "pi_second_" + oid
        # the second payment arrives three times (the provider retries)
        event = stripe_event(oid, 1250, "usd", txn=second)
        for _ in range(3):
            eq(env.callback(event)[0], 200, "provider acknowledged")
        refund_id = check_refund(w, oid, second, 1250, "duplicate_payment")
        o = env.get_order(oid)
        eq(o["status"], "PAID", "order stays PAID")
        eq(o["provider_txn_id"], first, "paid by the first transaction")
        eq(env.scalar(f"SELECT outcome FROM payment_log WHERE provider_txn_id='{second}' AND"
                      " kind='callback'"), "duplicate_payment", "payment log outcome")
        w.one_alert(oid, "duplicate_payment")
        sms, mail = w.alerts_naming(oid, "duplicate_payment")
        check(first in mail[0] and second in mail[0] and refund_id in mail[0],
              "the email names both transactions and the refund")
        eq(len(w.sink.received()), 1, "the business heard of the payment once")
    finally:
        w.close()


def test_duplicate_payment_worker_killed_after_commit():
    w = World("dup-crash")
    try:
        env = w.env
        env.start("paynotify-worker")
        oid, _ = paid_order(w)
        env.stop(env.procs[-1])
        env.procs.pop()
        doomed = env.start("paynotify-worker", {"PAYNOTIFY_FAILPOINT": "after_commit",
                                                "PAYNOTIFY_WORKER_THREADS": "1"})
        second = "pi_crash_" + oid
        eq(env.callback(stripe_event(oid, 1250, "usd", txn=second))[0], 200, "acknowledged")
        doomed.wait(30)
        eq(doomed.returncode, -9, "killed at the failpoint")
        env.procs.remove(doomed)
        env.start("paynotify-worker")
        check_refund(w, oid, second, 1250, "duplicate_payment")
        w.one_alert(oid, "duplicate_payment")
    finally:
        w.close()


def test_refund_provider_outage_retried():
    w = World("refund-outage")
    try:
        env = w.env
        w.stripe.fail_next(1, 503)
        env.start("paynotify-worker")
        oid, _ = paid_order(w)
        second = "pi_outage_" + oid
        env.callback(stripe_event(oid, 1250, "usd", txn=second))
        wait_for(lambda: env.scalar(f"SELECT last_error FROM refunds WHERE order_id='{oid}'"),
                 20, "a failed refund attempt recorded")
        eq(env.scalar(f"SELECT status FROM refunds WHERE order_id='{oid}'"), "PENDING",
           "still PENDING after the outage")
        refund_id = check_refund(w, oid, second, 1250, "duplicate_payment")
        tries = [r for r in w.stripe.requests() if r["idempotency_key"] == refund_id]
        eq(len(tries), 2, "one failed call, one retry, same key")
    finally:
        w.close()


def test_payment_after_close():
    w = World("after-close")
    try:
        env = w.env
        env.start("paynotify-worker")
        soon = (datetime.datetime.now(datetime.timezone.utc)
                + datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        o = env.create_order(w.sink.url, expire_at=soon)
        oid = o["order_id"]
        wait_for(lambda: env.get_order(oid)["status"] == "CLOSED", 20, "expired order CLOSED")
        wait_for(lambda: w.sink.received(), 20, "order.closed webhook")
        eq(__import__("json").loads(w.sink.received()[0]["body"])["type"], "order.closed",
           "webhook type")
        txn = "pi_late_" + oid
        eq(env.callback(stripe_event(oid, 1250, "usd", txn=txn))[0], 200, "acknowledged")
        check_refund(w, oid, txn, 1250, "paid_after_close")
        eq(env.get_order(oid)["status"], "CLOSED", "order stays CLOSED")
        w.one_alert(oid, "paid_after_close")
    finally:
        w.close()


def test_amount_mismatch_never_paid():
    w = World("mismatch")
    try:
        env = w.env
        env.start("paynotify-worker")
        o = env.create_order(w.sink.url, amount=1250)
        oid = o["order_id"]
        st, _, _ = env.callback(stripe_event(oid, 1000, "usd"))
        eq(st, 200, "the provider still gets its success reply")
        eq(env.callback(stripe_event(oid, 1250, "eur"))[0], 200, "currency mismatch acked")
        wait_for(lambda: env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{oid}'"
                                    " AND outcome='amount_mismatch'") == "2", 20, "recorded")
        eq(env.get_order(oid)["status"], "PENDING", "never PAID")
        w.one_alert(oid, "amount_mismatch", count=2)
        for detail in ("1000 USD", "1250 EUR"):
            eq(len(w.alerts_naming(oid, "amount_mismatch", detail)[1]), 1,
               f"one email naming {detail}")
        eq(env.scalar(f"SELECT COUNT(*) FROM refunds WHERE order_id='{oid}'"), "0", "no refund")
        eq(len(w.sink.received()), 0, "no business webhook")
    finally:
        w.close()


def test_unknown_order():
    w = World("unknown")
    try:
        env = w.env
        env.start("paynotify-worker")
        oid = "po_doesnotexist0000000000"
        eq(env.callback(stripe_event(oid, 500, "usd"))[0], 200, "acknowledged")
        wait_for(lambda: env.scalar(f"SELECT outcome FROM payment_log WHERE order_id='{oid}'")
                 == "unknown_order", 20, "payment log row")
        w.one_alert(oid, "unknown_order")
    finally:
        w.close()


if __name__ == "__main__":
    run([test_duplicate_payment_refunded_once, test_duplicate_payment_worker_killed_after_commit,
         test_refund_provider_outage_retried, test_payment_after_close,
         test_amount_mismatch_never_paid, test_unknown_order])
