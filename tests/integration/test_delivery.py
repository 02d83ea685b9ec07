"""tests/integration/test_delivery.py: webhook delivery that never gives up silently
(issue 4): delayed retries through RabbitMQ delay queues, the dead queue, SMS and email
alerts, the attempt history, isolation of a slow endpoint, outbound address safety, and
nothing lost across a broker restart or a worker killed mid-move."""
import json
import os
import subprocess
import time

from pnlib import (BUILD, Alerts, Env, Sink, check, eq, run, stripe_event,
                   verify_standard_webhook, wait_for)

SHORT = {"PAYNOTIFY_RETRY_DELAYS": "1s,1s,2s", "PAYNOTIFY_NOTIFY_TIMEOUT": "2s"}


def pay(env, sink, amount=1250):
    o = env.create_order(sink.url, amount=amount)
    st, _, body = env.callback(stripe_event(o["order_id"], amount, "usd"))
    eq(st, 200, f"callback accepted ({body!r})")
    return o["order_id"]


def attempts_of(env, order_id):
    return env.sql("SELECT a.attempt, COALESCE(a.http_status, 0), COALESCE(a.error, ''),"
                   " a.latency_ms, COALESCE(a.response_head, '') FROM notification_attempts a"
                   " JOIN notifications n ON n.id = a.notification_id"
                   f" WHERE n.order_id = '{order_id}' ORDER BY a.id")


def test_fails_twice_then_delivered():
    env = Env("retry-then-ok", SHORT)
    sink = Sink(fail_first=2)
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        oid = pay(env, sink)
        wait_for(lambda: env.get_order(oid)["notify_status"] == "DELIVERED", 40, "delivery")
        reqs = sink.received()
        eq(len(reqs), 3, "requests: two failures, then the delivery")
        eq(len({r["headers"]["webhook-id"] for r in reqs}), 1, "one webhook-id on every retry")
        check(reqs[1]["t"] - reqs[0]["t"] >= 0.8, "retry 1 waited about its 1 s delay")
        rows = attempts_of(env, oid)
        eq([r[0] for r in rows], ["0", "1", "2"], "attempt numbers")
        eq([r[1] for r in rows], ["500", "500", "200"], "HTTP status per attempt")
        eq(rows[0][2], "HTTP 500", "error of a failed attempt")
        eq(rows[0][4], "endpoint failure", "first bytes of the response")
        eq(rows[2][2], "", "no error on the delivered attempt")
        o = env.get_order(oid)
        eq(o["notify_attempts"], 3, "notify_attempts")
        eq(o["status"], "PAID", "order")
    finally:
        env.close()
        sink.close()


def test_always_failing_goes_dead_with_one_alert():
    env0 = Env("dead-alerts-tmp")
    alerts = Alerts(env0.dir)
    env = Env("dead", SHORT, alerts=alerts)
    sink = Sink(status=503)
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        dead_before = env.queues()["paynotify.notify.dead"]["messages"]
        oid = pay(env, sink)
        wait_for(lambda: env.get_order(oid)["notify_status"] == "FAILED", 60, "FAILED")
        time.sleep(3)  # nothing more may arrive
        eq(len(sink.received()), 4, "exactly 1 + N requests")
        o = env.get_order(oid)
        eq(o["notify_attempts"], 4, "notify_attempts")
        eq(o["notify_last_error"], "HTTP 503", "last error")
        eq(env.queues()["paynotify.notify.dead"]["messages"], dead_before + 1, "dead queue")
        sms = wait_for(lambda: [m for m in alerts.sms_messages() if oid in m["text"]], 30, "SMS")
        mails = wait_for(lambda: [m for m in alerts.mails() if oid in m], 30, "email")
        time.sleep(2)
        eq(len([m for m in alerts.sms_messages() if oid in m["text"]]), 1, "one SMS")
        eq(len([m for m in alerts.mails() if oid in m]), 1, "one email")
        eq(sms[0]["to"], "+8613800000000", "SMS recipient")
        for needle in (oid, env.business, sink.url, "4", "HTTP 503"):
            check(needle in mails[0], f"email names {needle!r}")
        # The operator fixes the endpoint and replays: delivered, same webhook-id.
        sink.status = 200
        out = subprocess.run([os.path.join(BUILD, "paynotify-admin"), "replay", oid],
                             env=env.env, check=True, capture_output=True, text=True).stdout
        check(out.startswith("1 notification"), f"replay output: {out!r}")
        wait_for(lambda: env.get_order(oid)["notify_status"] == "DELIVERED", 30, "replayed")
        eq(len({r["headers"]["webhook-id"] for r in sink.received()}), 1, "same webhook-id")
    finally:
        env.close()
        sink.close()
        alerts.close()


def test_slow_endpoint_does_not_delay_healthy_one():
    env = Env("isolation", {"PAYNOTIFY_NOTIFY_TIMEOUT": "4s", "PAYNOTIFY_RETRY_DELAYS": "30s"})
    slow = Sink(delay=10)
    fast = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        # More than the notify stage's prefetch window (64): the slow endpoint's backlog
        # must not keep the healthy business's webhooks from even being consumed.
        slow_ids = [pay(env, slow) for _ in range(100)]
        wait_for(lambda: len(slow.received()) >= 16, 10, "the slow endpoint holding requests")
        fast_ids = [pay(env, fast) for _ in range(20)]
        wait_for(lambda: all(env.get_order(i)["notify_status"] == "DELIVERED" for i in fast_ids),
                 30, "healthy webhooks")
        # Causal, not timed: every healthy webhook was delivered while the slow endpoint
        # still held its requests, before the first of them could even time out.
        eq(len(fast.received()), 20, "healthy requests")
        eq(sum(env.get_order(i)["notify_attempts"] for i in slow_ids), 0,
           "no slow attempt finished before the healthy ones were all delivered")
        check(slow.max_active <= 16, f"per-endpoint limit held ({slow.max_active} at once)")
    finally:
        env.close()
        slow.close()
        fast.close()


def test_notify_threads_deliver_each_webhook_once():
    """Several notify threads (each its own consumer, MySQL connection and webhook engine,
    recording in batches): every webhook arrives once, signed, with one recorded attempt;
    the per-endpoint limit holds for the whole process; copies of messages already
    DELIVERED are dropped without a request."""
    env = Env("notify-threads", dict(SHORT, PAYNOTIFY_NOTIFY_THREADS="4"))
    slow, fast = Sink(delay=0.3), Sink()
    try:
        env.start("paynotify-receiver")
        w = env.start("paynotify-worker")
        ids = [pay(env, slow if i % 2 else fast) for i in range(60)]
        wait_for(lambda: all(env.get_order(i)["notify_status"] == "DELIVERED" for i in ids), 60,
                 "every webhook delivered", interval=0.5)
        reqs = slow.received() + fast.received()
        eq(len(reqs), 60, "one request per webhook")
        eq(len({r["headers"]["webhook-id"] for r in reqs}), 60, "distinct webhook-ids")
        eq(sorted(verify_standard_webhook(env.webhook_secret, r)["data"]["order_id"]
                  for r in reqs), sorted(ids), "one signed webhook per order")
        check(slow.max_active <= 16, f"per-endpoint limit held ({slow.max_active} at once)")
        rows = env.sql("SELECT notification_id, COUNT(*), MAX(attempt) FROM notification_attempts"
                       " GROUP BY notification_id")
        eq(len(rows), 60, "notifications with attempts")
        eq({(r[1], r[2]) for r in rows}, {("1", "0")}, "one attempt each, numbered 0")
        eq({env.get_order(i)["notify_attempts"] for i in ids}, {1}, "orders' notify_attempts")
        # Every message again, twice, straight to the broker: nothing is sent again. The
        # copies go in while no worker runs and are counted in the queue first: amqp-publish
        # publishes without confirms, and here a run sometimes left fewer than 120 in the
        # queue; another round then tops them up (more copies only make the check harder).
        env.stop(w)
        nids = [r[0] for r in env.sql("SELECT id FROM notifications")]
        copies = 0
        for _ in range(3):
            subprocess.run(["amqp-publish", "--url", env.env["PAYNOTIFY_AMQP_URL"], "-e",
                            "paynotify", "-r", "paynotify.notify", "-p", "-l"], check=True,
                           text=True, input="".join(f'{{"notification_id":{n}}}\n'
                                                    for n in nids * 2))
            time.sleep(1)
            copies = env.queues()["paynotify.notify"]["messages"]
            if copies >= 120:
                break
        check(copies >= 120, f"at least 120 copies in paynotify.notify ({copies})")
        w = env.start("paynotify-worker", {"PAYNOTIFY_NOTIFY_THREADS": "4"})
        wait_for(lambda: env.metric(w.metrics_port, 'paynotify_worker_webhooks_total'
                                    '{outcome="skipped_delivered"}') >= copies, 30,
                 "the copies dropped")
        eq(env.metric(w.metrics_port, "paynotify_worker_notify_messages_total"), copies,
           "messages the notify stage took")
        time.sleep(1)
        eq(len(slow.received()) + len(fast.received()), 60, "no request for a copy")
        eq(env.scalar("SELECT COUNT(*) FROM notification_attempts"), "60", "no attempt recorded")
    finally:
        env.close()
        slow.close()
        fast.close()


def test_private_address_refused_unless_allowed():
    # One notify thread, so that every webhook below goes through the same curl engine.
    env = Env("ssrf", dict(SHORT, PAYNOTIFY_NOTIFY_THREADS="1"), allow_private=False)
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        # "member" allows private addresses: its webhooks reach the sink, one after the
        # other over one kept-alive connection.
        for i in range(3):
            o = env.create_order(sink.url, key=env.other_key)
            eq(env.callback(stripe_event(o["order_id"], 1250, "usd"))[0], 200, "member paid")
            wait_for(lambda: len(sink.received()) >= i + 1, 20, f"member webhook {i}")
        eq(len({r["peer"] for r in sink.received()}), 1, "member's webhooks reused a connection")
        # The business that does not allow them is refused, although an idle connection to
        # the very same address is open in the engine.
        oid = pay(env, sink)
        o = wait_for(lambda: (lambda g: g if g["notify_attempts"] >= 1 else None)(
            env.get_order(oid)), 20, "a refused attempt")
        check("blocked" in (o["notify_last_error"] or ""), f"error says why: {o}")
        time.sleep(1)
        eq(len(sink.received()), 3, "nothing reached the private address")
        # the same through a hostname that resolves to loopback
        o2 = env.create_order(f"http://localhost:{sink.port}/hook")
        env.callback(stripe_event(o2["order_id"], 1250, "usd"))
        wait_for(lambda: env.get_order(o2["order_id"])["notify_attempts"] >= 1, 20, "attempt")
        eq(len(sink.received()), 3, "nothing reached loopback by name")
    finally:
        env.close()
        sink.close()


def test_broker_restart_with_messages_in_delay_queues():
    env = Env("restart-delay", {"PAYNOTIFY_RETRY_DELAYS": "8s", "PAYNOTIFY_NOTIFY_TIMEOUT": "2s"})
    sink = Sink(fail_first=5)
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        ids = [pay(env, sink) for _ in range(5)]
        wait_for(lambda: len(sink.received()) >= 5, 20, "first attempts (all failing)")
        wait_for(lambda: env.queues()["paynotify.notify.retry.1.8s"]["messages"] == 5, 10,
                 "five messages waiting in the delay queue")
        env.stack("stop-one", "rabbitmq")
        env.stack("start-one", "rabbitmq")
        wait_for(lambda: all(env.get_order(i)["notify_status"] == "DELIVERED" for i in ids), 90,
                 "every webhook delivered after the broker restart", interval=1)
        eq(len(sink.received()), 10, "one failure and one delivery each")
    finally:
        env.close()
        sink.close()


def test_worker_killed_between_retry_publish_and_ack():
    env = Env("crash-retry", SHORT)
    sink = Sink(fail_first=1)
    try:
        env.start("paynotify-receiver")
        doomed = env.start("paynotify-worker", {"PAYNOTIFY_FAILPOINT": "after_retry_publish"})
        oid = pay(env, sink)
        doomed.wait(30)
        eq(doomed.returncode, -9, "worker died at the failpoint")
        env.procs.remove(doomed)
        env.start("paynotify-worker")
        wait_for(lambda: env.get_order(oid)["notify_status"] == "DELIVERED", 40, "delivery")
        time.sleep(3)
        n = len(sink.received())
        check(2 <= n <= 3, f"at most one extra attempt, never zero: {n} requests")
        eq(len({r["headers"]["webhook-id"] for r in sink.received()}), 1, "same webhook-id")
    finally:
        env.close()
        sink.close()


def test_poison_callback_parked_with_alert():
    env0 = Env("poison-alerts-tmp")
    alerts = Alerts(env0.dir)
    env = Env("poison", alerts=alerts)
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        # A message no worker can ever process, published straight to the broker.
        subprocess.run(["amqp-publish", "--url", env.env["PAYNOTIFY_AMQP_URL"], "-e",
                        "paynotify", "-r", "paynotify.callbacks", "-p", "-b",
                        "this is not an envelope"], check=True)
        wait_for(lambda: env.queues()["paynotify.callbacks.parked"]["messages"] == 1, 20,
                 "the poison message parked")
        # the line is not blocked
        oid = pay(env, sink)
        wait_for(lambda: env.get_order(oid)["notify_status"] == "DELIVERED", 20, "delivery")
        wait_for(lambda: [m for m in alerts.mails() if "parked" in m], 30, "an alert")
        parked = subprocess.run(["amqp-get", "--url", env.env["PAYNOTIFY_AMQP_URL"], "-q",
                                 "paynotify.callbacks.parked"], check=True, capture_output=True,
                                text=True).stdout
        check("envelope: not a JSON object" in json.loads(parked)["reason"],
              f"the parked message carries its reason: {parked}")
        eq(env.queues()["paynotify.callbacks"]["messages"], 0, "nothing left looping")
    finally:
        env.close()
        sink.close()
        alerts.close()


if __name__ == "__main__":
    run([test_fails_twice_then_delivered, test_always_failing_goes_dead_with_one_alert,
         test_slow_endpoint_does_not_delay_healthy_one, test_notify_threads_deliver_each_webhook_once,
         test_private_address_refused_unless_allowed,
         test_broker_restart_with_messages_in_delay_queues,
         test_worker_killed_between_retry_publish_and_ack,
         test_poison_callback_parked_with_alert])
