"""tests/integration/test_pipeline.py: one payment through every real part (issue 3).

Order API -> Stripe-signed callback -> receiver (publish confirmed) -> RabbitMQ -> worker
(Redis + one MySQL transaction) -> notify stage -> signed webhook on a real HTTP endpoint.
"""
import json
import time

from pnlib import (Env, Sink, check, eq, request, run, stripe_event, stripe_sign,
                   verify_standard_webhook, wait_for)


def test_order_api():
    env = Env("order-api")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        o = env.create_order(sink.url, amount=1999, currency="cny", boid="same-1")
        eq(o["status"], "PENDING", "new order status")
        eq(o["currency"], "CNY", "currency normalised")
        eq(o["amount"], 1999, "amount in minor units")
        eq(o["notify_status"], "NONE", "notify status")
        check(o["order_id"].startswith("po_"), "order id prefix")
        # the same business_order_id with the same content: 200 and the same order
        again = env.create_order(sink.url, amount=1999, currency="cny", boid="same-1", expect=200)
        eq(again["order_id"], o["order_id"], "idempotent create")
        # other content: 409
        env.create_order(sink.url, amount=2000, currency="cny", boid="same-1", expect=409)
        # notify_url outside the business's prefixes: 422
        env.create_order("https://evil.example/hook", expect=422)
        # bad amounts and currencies: 422; not JSON: 400
        env.create_order(sink.url, amount=12.5, expect=422)
        env.create_order(sink.url, amount="1250", expect=422)
        env.create_order(sink.url, amount=0, expect=422)
        env.create_order(sink.url, currency="dollars", expect=422)
        env.create_order(sink.url, expire_at="tomorrow", expect=422)
        st, _, body = request(env.port, "POST", "/v1/orders", "{not json", env.auth())
        eq(st, 400, "malformed JSON")
        eq(json.loads(body)["error"]["code"], "bad_request", "error body")
        # invalid UTF-8, a NUL inside a string, a non-strict document: 400
        for bad in (b'{"business_order_id":"\xff\xfe","amount":1,"currency":"USD"}',
                    b'{"business_order_id":"a\x00b","amount":1,"currency":"USD"}',
                    b"{'business_order_id':'x'}"):
            st, _, _ = request(env.port, "POST", "/v1/orders", bad, env.auth())
            eq(st, 400, f"malformed body {bad!r}")
        # no key, wrong key: 401
        st, _, _ = request(env.port, "POST", "/v1/orders", "{}", {})
        eq(st, 401, "missing API key")
        st, _, _ = request(env.port, "GET", f"/v1/orders/{o['order_id']}", None,
                           {"Authorization": "Bearer nope"})
        eq(st, 401, "wrong API key")
        # another business cannot see it; unknown ids are 404 too
        st, _, _ = request(env.port, "GET", f"/v1/orders/{o['order_id']}", None,
                           env.auth(env.other_key))
        eq(st, 404, "another business's order")
        st, _, _ = request(env.port, "GET", "/v1/orders/po_doesnotexist", None, env.auth())
        eq(st, 404, "unknown order")
        eq(env.get_order(o["order_id"])["order_id"], o["order_id"], "GET own order")
        # unknown route, oversized body
        eq(request(env.port, "GET", "/nope")[0], 404, "unknown route")
        st, _, _ = request(env.port, "POST", "/v1/orders", b"x" * (70 * 1024), env.auth())
        eq(st, 413, "oversized body")
    finally:
        env.close()
        sink.close()


def test_payment_end_to_end():
    env = Env("e2e")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        worker = env.start("paynotify-worker")
        o = env.create_order(sink.url, amount=1250, currency="USD")
        body = stripe_event(o["order_id"], 1250, "usd")
        st, _, reply = env.callback(body)
        eq(st, 200, f"Stripe callback status ({reply!r})")
        req = wait_for(lambda: sink.received(), 30, "the business webhook")[0]
        hook = verify_standard_webhook(env.webhook_secret, req)
        eq(hook["type"], "order.paid", "webhook type")
        eq(hook["data"]["order_id"], o["order_id"], "webhook order")
        eq(hook["data"]["status"], "PAID", "webhook order status")
        eq(hook["data"]["amount"], 1250, "webhook amount")
        check(hook["timestamp"].endswith("Z"), "webhook timestamp is RFC 3339 UTC")
        got = wait_for(lambda: (lambda g: g if g["notify_status"] == "DELIVERED" else None)(
            env.get_order(o["order_id"])), 30, "notify_status DELIVERED")
        eq(got["status"], "PAID", "order status")
        check(got["provider_txn_id"].startswith("pi_"), "provider txn id recorded")
        eq(got["notify_attempts"], 1, "one attempt")
        eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{o['order_id']}'"), "1",
           "payment_log rows")
        eq(env.scalar(f"SELECT outcome FROM payment_log WHERE order_id='{o['order_id']}'"),
           "applied", "payment_log outcome")
        check(env.metric(worker.metrics_port,
                         'paynotify_worker_callbacks_total{outcome="applied"}') >= 1,
              "worker applied metric")
        check(env.metric(env.port, 'paynotify_receiver_callbacks_total{channel="stripe",'
                                   'outcome="accepted"}') >= 1, "receiver accepted metric")
        # The notify message's confirm is read after the callback was acked; the row is then
        # marked published by the worker itself (within ANNOUNCE_FLUSH_MS), long before the
        # sweeper (PAYNOTIFY_SWEEP_INTERVAL, 10 s) would publish it a second time.
        wait_for(lambda: env.scalar("SELECT published_at IS NOT NULL FROM notifications WHERE "
                                    f"order_id='{o['order_id']}'") == "1", 5,
                 "outbox row marked published after the broker's confirm")
        eq(env.metric(worker.metrics_port, 'paynotify_worker_notify_published_total{via="sweeper"}'),
           0, "nothing left for the sweeper")
    finally:
        env.close()
        sink.close()


def test_same_callback_ten_times():
    env = Env("dup10")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        o = env.create_order(sink.url)
        body = stripe_event(o["order_id"], 1250, "usd")
        for i in range(10):
            st, _, _ = env.callback(body)
            eq(st, 200, f"copy {i} acknowledged")
        wait_for(lambda: env.get_order(o["order_id"])["notify_status"] == "DELIVERED", 30,
                 "delivery")
        time.sleep(2)  # give any wrongly duplicated work time to show up
        eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{o['order_id']}'"), "1",
           "payment_log rows for 10 copies")
        eq(env.scalar(f"SELECT COUNT(*) FROM notifications WHERE order_id='{o['order_id']}'"),
           "1", "outbox rows")
        ids = {r["headers"]["webhook-id"] for r in sink.received()}
        eq(len(ids), 1, "distinct webhook ids")
        eq(len(sink.received()), 1, "webhook requests")
    finally:
        env.close()
        sink.close()


def test_rejected_callbacks_enqueue_nothing():
    env = Env("reject")
    try:
        # No worker: whatever the receiver published would stay in the queue.
        env.start("paynotify-receiver")
        before = env.queues()["paynotify.callbacks"]["messages"]
        o = env.create_order("http://127.0.0.1:9/hook")
        body = stripe_event(o["order_id"], 1250)
        forged = stripe_sign("whsec_wrong", body)
        stale = stripe_sign(env.stripe_secret, body, t=int(time.time()) - 301)
        future = stripe_sign(env.stripe_secret, body, t=int(time.time()) + 301)
        tampered_body = body.replace(b"1250", b"1")
        cases = [("forged", body, forged), ("stale", body, stale), ("future", body, future),
                 ("tampered", tampered_body, stripe_sign(env.stripe_secret, body)),
                 ("no signature", body, ""), ("garbage header", body, "v1=,t=x"),
                 ("not JSON", b"not json", None), ("no event id", b'{"type":"x"}', None)]
        for name, b, sig in cases:
            st, _, _ = env.callback(b, sig=sig if sig is not None else stripe_sign(
                env.stripe_secret, b))
            eq(st, 400, f"{name} callback status")
        st, _, _ = env.callback(body, channel="paypal")
        eq(st, 404, "unknown channel")
        st, _, _ = env.callback(b"x" * (65 * 1024))
        eq(st, 413, "oversized callback")
        eq(env.queues()["paynotify.callbacks"]["messages"], before, "messages enqueued")
        check(env.metric(env.port, 'paynotify_receiver_callbacks_total{channel="stripe",'
                                   'outcome="rejected"}') >= len(cases), "rejected metric")
    finally:
        env.close()


if __name__ == "__main__":
    run([test_order_api, test_payment_end_to_end, test_same_callback_ten_times,
         test_rejected_callbacks_enqueue_nothing])
