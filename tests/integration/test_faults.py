"""tests/integration/test_faults.py: nothing lost, nothing applied twice when a part
fails (issue 3): the broker stops under the receiver, a worker is killed between its
MySQL commit and its ack."""
import time

from pnlib import Env, Sink, check, eq, run, stripe_event, wait_for


def test_broker_down_then_back():
    env = Env("broker-down")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        o = env.create_order(sink.url)
        body = stripe_event(o["order_id"], 1250, "usd")
        env.stack("stop-one", "rabbitmq")
        try:
            t0 = time.time()
            st, _, reply = env.callback(body)
            eq(st, 503, f"callback while the broker is down ({reply!r})")
            check(time.time() - t0 < 10, "503 comes within the confirm bound")
            eq(env.get_order(o["order_id"])["status"], "PENDING", "order untouched")
        finally:
            env.stack("start-one", "rabbitmq")
        # The provider retries the same notification until we say yes.
        st = wait_for(lambda: env.callback(body)[0] == 200, 60, "callback accepted again",
                      interval=1)
        wait_for(lambda: env.get_order(o["order_id"])["notify_status"] == "DELIVERED", 60,
                 "delivery after the broker came back")
        eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{o['order_id']}'"), "1",
           "payment_log rows")
        eq(len(sink.received()), 1, "webhooks")
    finally:
        env.close()
        sink.close()


def test_worker_killed_between_commit_and_ack():
    env = Env("crash-commit")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        doomed = env.start("paynotify-worker", {"PAYNOTIFY_FAILPOINT": "after_commit",
                                                "PAYNOTIFY_WORKER_THREADS": "1"})
        o = env.create_order(sink.url)
        eq(env.callback(stripe_event(o["order_id"], 1250, "usd"))[0], 200, "callback accepted")
        doomed.wait(30)
        eq(doomed.returncode, -9, "worker died by SIGKILL at the failpoint")
        env.procs.remove(doomed)
        # Committed but neither published nor acked.
        eq(env.get_order(o["order_id"])["status"], "PAID", "order committed before the crash")
        eq(len(sink.received()), 0, "no webhook yet")
        env.start("paynotify-worker")
        wait_for(lambda: env.get_order(o["order_id"])["notify_status"] == "DELIVERED", 60,
                 "delivery after restart")
        time.sleep(2)
        eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{o['order_id']}'"), "1",
           "payment_log rows")
        eq(env.scalar(f"SELECT version FROM orders WHERE id='{o['order_id']}'"), "1",
           "order changed once")
        eq(len(sink.received()), 1, "webhooks")
        eq(env.queues()["paynotify.callbacks"]["messages"], 0, "callback queue drained")
    finally:
        env.close()
        sink.close()


if __name__ == "__main__":
    run([test_broker_down_then_back, test_worker_killed_between_commit_and_ack])
