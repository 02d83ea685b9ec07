"""tests/integration/test_exactly_once.py: money applied exactly once under concurrency and
failures (issue 5): hundreds of copies of one callback at once across two worker processes,
with Redis flushed in the middle or stopped for the whole run; many orders with
interleaved duplicates; out-of-order provider events."""
import concurrent.futures
import random
import subprocess
import time

from pnlib import Env, Sink, check, eq, run, stripe_event, wait_for

WORKERS = {"PAYNOTIFY_WORKER_THREADS": "4"}


def blast(env, bodies, threads=32):
    """Posts every body concurrently; returns the list of HTTP statuses."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda b: env.callback(b)[0], bodies))


def redis_cli(env, *args):
    port = env.env["PAYNOTIFY_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    return subprocess.run(["redis-cli", "-p", port, *args], check=True, capture_output=True,
                          text=True).stdout


def applied_once(env, sink, oid, copies):
    wait_for(lambda: env.get_order(oid)["notify_status"] == "DELIVERED", 60, "delivery")
    time.sleep(2)  # room for any wrongly duplicated effect to show
    eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{oid}'"), "1",
       f"payment_log rows for {copies} copies")
    eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{oid}' AND"
                  " outcome='applied'"), "1", "success rows")
    eq(env.scalar(f"SELECT version FROM orders WHERE id='{oid}'"), "1", "one PAID transition")
    eq(env.scalar(f"SELECT COUNT(*) FROM notifications WHERE order_id='{oid}'"), "1", "outbox")
    hooks = [r for r in sink.received() if oid.encode() in r["body"]]
    eq(len({r["headers"]["webhook-id"] for r in hooks}), 1, "webhook ids")
    eq(len(hooks), 1, "webhooks")


def many_copies(name, redis_mode):
    env = Env(name)
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        w1 = env.start("paynotify-worker", WORKERS)
        env.start("paynotify-worker", WORKERS)
        o = env.create_order(sink.url)
        body = stripe_event(o["order_id"], 1250, "usd")
        if redis_mode == "stopped":
            env.stack("stop-one", "redis")
        try:
            if redis_mode == "flushed":
                statuses = blast(env, [body] * 100)
                redis_cli(env, "FLUSHALL")
                statuses += blast(env, [body] * 100)
            else:
                statuses = blast(env, [body] * 200)
            eq(statuses.count(200), 200, "all 200 copies acknowledged")
            applied_once(env, sink, o["order_id"], 200)
            if redis_mode == "stopped":
                check(env.metric(w1.metrics_port, "paynotify_worker_redis_fallbacks_total") > 0,
                      "the worker counted its MySQL-only fallback")
        finally:
            if redis_mode == "stopped":
                env.stack("start-one", "redis")
        eq(env.queues()["paynotify.callbacks"]["messages"], 0, "callbacks drained")
    finally:
        env.close()
        sink.close()


def test_200_copies_two_processes():
    many_copies("copies", "up")


def test_200_copies_redis_flushed_midway():
    many_copies("copies-flush", "flushed")


def test_200_copies_redis_stopped():
    many_copies("copies-noredis", "stopped")


def test_50_orders_5_duplicates_interleaved():
    env = Env("interleaved")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker", WORKERS)
        env.start("paynotify-worker", WORKERS)
        orders = [env.create_order(sink.url, amount=100 + i)["order_id"] for i in range(50)]
        bodies = [stripe_event(oid, 100 + i, "usd") for i, oid in enumerate(orders)] * 5
        random.shuffle(bodies)
        statuses = blast(env, bodies)
        eq(statuses.count(200), 250, "250 callbacks acknowledged")
        wait_for(lambda: env.scalar("SELECT COUNT(*) FROM orders WHERE notify_status='DELIVERED'"
                                    " AND id IN (%s)" % ",".join(f"'{o}'" for o in orders))
                 == "50", 60, "50 deliveries")
        time.sleep(2)
        ids = ",".join(f"'{o}'" for o in orders)
        eq(env.scalar(f"SELECT COUNT(*) FROM orders WHERE status='PAID' AND version=1 AND"
                      f" id IN ({ids})"), "50", "50 PAID, once each")
        eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id IN ({ids})"), "50",
           "payment_log rows")
        eq(len(sink.received()), 50, "50 webhooks")
        eq(len({r["headers"]["webhook-id"] for r in sink.received()}), 50, "50 webhook ids")
    finally:
        env.close()
        sink.close()


def test_out_of_order_events():
    env = Env("order-of-events")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        # failed, then succeeded: pays
        a = env.create_order(sink.url)["order_id"]
        eq(env.callback(stripe_event(a, 1250, "usd", etype="payment_intent.payment_failed"))[0],
           200, "failed event acknowledged")
        wait_for(lambda: env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{a}'")
                 == "1", 20, "failure recorded")
        eq(env.get_order(a)["status"], "PENDING", "a failure leaves the order payable")
        txn = "pi_ooo_" + a
        env.callback(stripe_event(a, 1250, "usd", txn=txn))
        wait_for(lambda: env.get_order(a)["status"] == "PAID", 20, "paid after a failure")
        # succeeded, then failed / canceled / processing: stays PAID
        for etype in ("payment_intent.payment_failed", "payment_intent.canceled",
                      "payment_intent.processing"):
            eq(env.callback(stripe_event(a, 1250, "usd", etype=etype, txn=txn))[0], 200, etype)
        wait_for(lambda: env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{a}'")
                 == "5", 20, "late events recorded")
        o = env.get_order(a)
        eq(o["status"], "PAID", "late failures never move a PAID order back")
        eq(o["provider_txn_id"], txn, "transaction kept")
        eq(env.scalar(f"SELECT version FROM orders WHERE id='{a}'"), "1", "one transition")
        # the same transaction under a second event id is not a second payment
        env.callback(stripe_event(a, 1250, "usd", txn=txn))
        wait_for(lambda: env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{a}' AND"
                                    " outcome='already_paid'") == "1", 20, "already_paid")
        eq(env.scalar(f"SELECT COUNT(*) FROM refunds WHERE order_id='{a}'"), "0", "no refund")
    finally:
        env.close()
        sink.close()


if __name__ == "__main__":
    run([test_200_copies_two_processes, test_200_copies_redis_flushed_midway,
         test_200_copies_redis_stopped, test_50_orders_5_duplicates_interleaved,
         test_out_of_order_events])
