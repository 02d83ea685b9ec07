#!/usr/bin/env python3
"""tests/fault/chaos.py: fault injection under load; proves that no accepted payment is lost
and none is applied twice.

One receiver and two workers (4 threads each) run against the stack that scripts/chaos (or
scripts/test, under ctest label `fault`) started. A load thread creates orders and posts
signed Stripe callbacks at a steady, bounded rate, each 1-3 times (duplicates, sometimes
concurrent); like a provider it retries every non-2xx answer with a short backoff until it
gets a 2xx or the run ends. Meanwhile a fault thread cycles short, always-restored faults:
kill -9 a worker, kill -9 the receiver, restart RabbitMQ, stop Redis + restart + FLUSHALL,
restart MariaDB, freeze the broker (SIGSTOP longer than the confirm timeout), poison
messages, a business endpoint outage, and network partitions: one running worker loses its
path to MariaDB (worker_mysql_partition) or to RabbitMQ (worker_broker_partition) for longer
than the worker's connect/RPC/confirm timeouts, with packets dropped both ways (connections
hang, nothing is refused), then the path comes back and the worker must recover by itself:
it must apply callbacks again within --recover-limit seconds, without a restart. The
partitions use tests/fault/netpart.py (root: every worker runs in a cgroup v2 of its own, and
iptables rules tagged with the run's tag drop its packets to and from the one server port);
chaos.py refuses to run, with the reason, when that mechanism does not work here (not root,
no iptables, no cgroup v2, or its self-test fails), and removes its rules and cgroups on
every exit path. Then the load stops, the system drains and the ledger is checked from
outside (SQL, the sink's records, queue counts):

  * every order whose callback got a 2xx has exactly one `applied` payment_log row and
    version 1; no order has two applied rows (lost = 0, doubled = 0);
  * every PAID order's business got >= 1 verified webhook, all with one webhook-id, or the
    order's notification is FAILED with its notify_failed alert row;
  * no webhook for an order that is not PAID; every 2xx callback's event id is logged;
  * the callback and notify queues are empty after the drain; poison messages are parked;
  * every partitioned worker applied callbacks again after the heal (no restart), and while
    it was cut from MariaDB it applied none (the cut was real).

Usage: chaos.py [--quick] [--seconds N] [--rate R] [--seed S] [--recover-limit S]
                [--partition S] [--faults KIND,KIND...]
Needs the environment of a running stack (STACK_DIR, STACK_MYSQL_PORT, STACK_RABBIT_PORT,
PAYNOTIFY_AMQP_URL, ...) and root. PAYNOTIFY_CHAOS_NET_TAG (pnchaos-<pid>-<hex>, set by
scripts/chaos so that its EXIT trap can clean up too) names the run's rules and cgroups.
Exit 0 when the ledger balances, 1 otherwise.
"""
import argparse
import calendar
import collections
import http.client
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
import pnlib  # noqa: E402
from pnlib import Env, Failure, Sink, stripe_event, stripe_sign, verify_standard_webhook  # noqa: E402

import netpart  # noqa: E402  (tests/fault/netpart.py, next to this file)

AMOUNT = 1250


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()

    def add(self, key, n=1):
        with self.lock:
            self.c[key] += n

    def get(self, key):
        with self.lock:
            return self.c[key]


class Payment:
    """One order and the one provider event that pays it."""

    def __init__(self, n):
        self.n = n
        self.boid = f"chaos-{n}-{secrets.token_hex(4)}"
        self.order_id = None
        self.event_id = "evt_" + secrets.token_hex(10)
        self.txn = "pi_" + secrets.token_hex(10)
        self.body = None
        self.copies = 0
        self.statuses = []   # every answer to every POST of this callback
        self.acked = False   # at least one 2xx
        self.lock = threading.Lock()


def post(port, method, path, body, headers, timeout=10):
    """(status, None) or (None, error kind)."""
    try:
        return pnlib.request(port, method, path, body, headers, timeout=timeout)[0], None
    except ConnectionRefusedError:
        return None, "refused"
    except (OSError, http.client.HTTPException) as e:
        return None, "conn_error:" + type(e).__name__


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.cnt = Counters()
        self.faults = Counters()
        self.payments = []
        self.plock = threading.Lock()
        self.sink = Sink()
        self.env = Env("chaos", extra_env={
            "PAYNOTIFY_RETRY_DELAYS": "1s,2s,3s",
            "PAYNOTIFY_NOTIFY_TIMEOUT": "2s",
            "PAYNOTIFY_SWEEP_INTERVAL": "1s",
            "PAYNOTIFY_CONFIRM_TIMEOUT": "2s",
            "PAYNOTIFY_WORKER_THREADS": "4",
        })
        self.redis_port = pnlib.need_env("STACK_REDIS_PORT")
        self.amqp_vhost_url = self.env.env["PAYNOTIFY_AMQP_URL"]
        self.receiver = None
        self.workers = []
        self.proc_lock = threading.Lock()
        self.stop_load = threading.Event()
        self.stop_faults = threading.Event()
        self.abort = threading.Event()  # set on SIGTERM/SIGINT: end a partition at once
        self.fault_thread = None
        self.retry_deadline = None  # providers give up after this
        self.poison = 0
        self.problems = []
        self.net = args.net  # netpart.NetPartition of this run
        self.mysql_port = int(pnlib.need_env("STACK_MYSQL_PORT"))
        self.amqp_port = int(pnlib.need_env("STACK_RABBIT_PORT"))
        self.partitions = []  # one dict per partition: kind, pid, seconds, conns, recovery
        self.nworkers = 0

    # ---------------------------------------------------------------- processes
    def start_receiver(self):
        self.receiver = self.env.start("paynotify-receiver")

    def start_worker(self):
        """Env.start("paynotify-worker"), but inside a cgroup of its own (netpart.wrap: the
        same pid), so that a partition can cut this one process off."""
        env = dict(self.env.env)
        metrics_port = pnlib.free_port()
        env["PAYNOTIFY_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
        self.nworkers += 1
        cg = self.net.new_cgroup(f"worker{self.nworkers}")
        self.env.nlogs += 1
        logf = os.path.join(self.env.dir, f"paynotify-worker-{self.env.nlogs}.log")
        binary = os.path.join(pnlib.BUILD, "paynotify-worker")
        p = subprocess.Popen(self.net.wrap(cg, [binary]), env=env, stdout=open(logf, "wb"),
                             stderr=subprocess.STDOUT)
        p.args = [binary]  # for Env's messages: the wrapper exec'd the worker
        p.log = logf
        p.metrics_port = metrics_port
        p.cgroup = cg
        self.env.procs.append(p)
        pnlib.wait_for(lambda: self.env._ready(metrics_port, p), 60, "paynotify-worker /readyz")
        with self.proc_lock:
            self.workers.append(p)
        return p

    def kill9(self, p):
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        with self.proc_lock:
            if p in self.env.procs:
                self.env.procs.remove(p)
            if p in self.workers:
                self.workers.remove(p)
        if getattr(p, "cgroup", None):
            self.net.drop_cgroup(p.cgroup)

    # ---------------------------------------------------------------- load
    def headers(self, body):
        return {"Stripe-Signature": stripe_sign(self.env.stripe_secret, body),
                "Content-Type": "application/json"}

    def create(self, pay):
        body = json.dumps({"business_order_id": pay.boid, "amount": AMOUNT, "currency": "USD",
                           "channel": "stripe", "subject": "chaos",
                           "notify_url": self.sink.url})
        backoff = 0.2
        while time.time() < self.retry_deadline:
            try:
                st, _, data = pnlib.request(self.env.port, "POST", "/v1/orders", body,
                                            self.env.auth(), timeout=10)
            except (OSError, http.client.HTTPException):
                st, data = None, b""
            if st in (200, 201):
                pay.order_id = json.loads(data)["order_id"]
                return True
            self.cnt.add("orders_create_retried")
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        return False

    def send_copy(self, pay):
        """One provider delivery of the callback: retried until 2xx or the deadline."""
        backoff = 0.2 + self.rng.random() * 0.2
        while True:
            # A provider re-signs on every attempt (fresh timestamp).
            st, err = post(self.env.port, "POST", "/v1/callbacks/stripe", pay.body,
                           self.headers(pay.body))
            self.cnt.add("callbacks_sent")
            with pay.lock:
                pay.statuses.append(st if st is not None else err)
            if st is not None and 200 <= st < 300:
                self.cnt.add("callbacks_2xx")
                with pay.lock:
                    pay.acked = True
                return
            if st is None:
                self.cnt.add("callbacks_" + err.split(":")[0])
            elif st >= 500:
                self.cnt.add("callbacks_5xx")
            else:
                self.cnt.add(f"callbacks_{st}")
                if st != 429 and st != 408:
                    self.problems.append(f"callback for {pay.order_id} answered {st}")
            if time.time() >= self.retry_deadline:
                self.cnt.add("callbacks_given_up")
                return
            self.cnt.add("callbacks_retried")
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def payment(self, pay):
        if not self.create(pay):
            self.cnt.add("orders_not_created")
            return
        self.cnt.add("orders_created")
        pay.body = stripe_event(pay.order_id, AMOUNT, "usd", event_id=pay.event_id, txn=pay.txn)
        pay.copies = self.rng.choice([1, 1, 2, 2, 3])
        if pay.copies > 1:
            self.cnt.add("duplicates", pay.copies - 1)
        concurrent = pay.copies > 1 and self.rng.random() < 0.5
        if concurrent:
            self.cnt.add("concurrent_duplicate_sets")
            ts = [threading.Thread(target=self.send_copy, args=(pay,))
                  for _ in range(pay.copies)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        else:
            for i in range(pay.copies):
                if i:
                    time.sleep(self.rng.random() * 0.5)
                self.send_copy(pay)

    def load(self, pool):
        interval = 1.0 / self.args.rate
        nxt = time.time()
        n = 0
        futs = []
        while not self.stop_load.is_set():
            n += 1
            pay = Payment(n)
            with self.plock:
                self.payments.append(pay)
            futs.append(pool.submit(self.payment, pay))
            nxt += interval
            # Bounded: never more than the pool's backlog (the rate falls when we stall).
            while sum(1 for f in futs[-400:] if not f.done()) > 300:
                time.sleep(0.05)
                nxt = time.time()
            d = nxt - time.time()
            if d > 0:
                self.stop_load.wait(d)
        return futs

    # ---------------------------------------------------------------- faults
    def fault_worker_kill(self):
        with self.proc_lock:
            victim = self.rng.choice(self.workers) if self.workers else None
        if victim is None:
            return
        self.kill9(victim)
        time.sleep(self.rng.uniform(0.5, 2.0))
        self.start_worker()

    def fault_receiver_kill(self):
        self.kill9(self.receiver)
        time.sleep(self.rng.uniform(1.0, 3.0))  # callbacks meet a closed port
        self.start_receiver()

    def fault_rabbitmq_restart(self):
        try:
            self.env.stack("stop-one", "rabbitmq")
            time.sleep(self.rng.uniform(0.5, 2.0))
        finally:
            self.env.stack("start-one", "rabbitmq")

    def fault_redis_flush(self):
        try:
            self.env.stack("stop-one", "redis")
            time.sleep(self.rng.uniform(0.5, 2.0))
        finally:
            self.env.stack("start-one", "redis")
        # Appendonly brings the markers back: drop them, as a failover to an empty replica.
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", self.redis_port, "FLUSHALL"],
                       check=True, stdout=subprocess.DEVNULL)

    def fault_mariadb_restart(self):
        try:
            self.env.stack("stop-one", "mariadb")
            time.sleep(self.rng.uniform(0.5, 2.0))
        finally:
            self.env.stack("start-one", "mariadb")

    def fault_broker_freeze(self):
        with open(os.path.join(self.env.stack_dir, "run", "rabbitmq-beam.pid")) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(self.rng.uniform(3.0, 5.0))  # > PAYNOTIFY_CONFIRM_TIMEOUT (2s)
        finally:
            os.kill(pid, signal.SIGCONT)

    def fault_poison(self):
        n = self.rng.randint(1, 3)
        for i in range(n):
            body = self.rng.choice(["garbage", "{", '{"v":1}', "\u00e9\u00ff not json",
                                    '{"v":1,"callback_id":"x","channel":"nope",'
                                    '"received_at_ms":1,"headers":{},"body_b64":"e30="}'])
            r = subprocess.run(["amqp-publish", "--url", self.amqp_vhost_url, "-e", "paynotify",
                                "-r", "paynotify.callbacks", "-p", "-b", body],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode == 0:
                self.poison += 1
            else:
                self.problems.append(f"amqp-publish of a poison message failed: {r.stderr}")

    def fault_sink_outage(self):
        self.sink.status = 503
        try:
            time.sleep(self.rng.uniform(1.0, 3.0))
        finally:
            self.sink.status = 200

    def progress(self, p):
        """Callbacks the worker finished through MySQL (applied or found already applied):
        both need the broker (to get the message) and MySQL (the transaction)."""
        try:
            return (self.env.metric(p.metrics_port, 'paynotify_worker_callbacks_total{outcome="applied"}')
                    + self.env.metric(p.metrics_port,
                                      'paynotify_worker_callbacks_total{outcome="duplicate_mysql"}'))
        except (OSError, http.client.HTTPException, ValueError):
            return None

    def worker_ready(self, p):
        try:
            return pnlib.request(p.metrics_port, "GET", "/readyz", timeout=2)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    @staticmethod
    def log_events(path, t0, t1):
        """{event: count} of the warn/error lines a process logged between t0 and t1."""
        out = collections.Counter()
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    if '"level":"info"' in line or '"level":"debug"' in line:
                        continue
                    try:
                        o = json.loads(line)
                        ts = o["ts"]
                        t = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) \
                            + float("0" + ts[19:23])
                    except (ValueError, KeyError):
                        continue
                    if t0 <= t <= t1:
                        out[o.get("event", "?")] += 1
        except OSError:
            pass
        return dict(out)

    def partition(self, kind, port, server):
        """Cuts one running worker off from 127.0.0.1:port (packets dropped both ways) for
        longer than its timeouts, heals, then waits until it applies callbacks again."""
        with self.proc_lock:
            alive = [p for p in self.workers if p.poll() is None]
        if not alive:
            return
        victim = self.rng.choice(alive)
        n = sum(1 for r in self.partitions if r["kind"] == kind)
        # The second partition of each kind in the full run is long: past the MySQL client's
        # 30 s read/write timeout, or past the AMQP heartbeat timeout (2 x 30 s) and
        # TCP_USER_TIMEOUT (60 s). The others are short: past the 5 s connect/RPC timeouts.
        long_cut = not self.args.quick and n == 1
        secs = (self.rng.uniform(*self.args.partition_long[kind]) if long_cut
                else self.rng.uniform(*self.args.partition))
        rec = {"kind": kind, "pid": victim.pid, "seconds": round(secs, 1), "log": victim.log}
        self.partitions.append(rec)
        before = self.progress(victim)
        t_cut = time.time()
        cut = self.net.cut(victim.pid, victim.cgroup, port)
        rec["conns"] = len(cut.local_ports)
        log(f"{kind}: worker {victim.pid} cut off from {server} (127.0.0.1:{port}, "
            f"{len(cut.local_ports)} connections) for {secs:.1f}s")
        try:
            self.abort.wait(min(1.0, secs))  # commits already on the wire may still land
            during0 = self.progress(victim)
            self.abort.wait(max(0.0, secs - 1.0))
            during1 = self.progress(victim)
            rec["ready_during"] = self.worker_ready(victim)  # what /readyz said at the end
        finally:
            self.net.heal(cut)
        t_heal = time.time()
        secs = t_heal - t_cut
        rec["seconds"] = round(secs, 1)
        rec["progress_during"] = (None if during0 is None or during1 is None
                                  else during1 - during0)
        if kind == "worker_mysql_partition" and rec["progress_during"]:
            self.problems.append(f"{kind}: worker {victim.pid} applied {rec['progress_during']:.0f} "
                                 "callbacks while cut off from MariaDB: the partition was not real")
        # The worker must come back by itself: callbacks applied again, /readyz 200.
        base = self.progress(victim)
        rec["recovered_s"] = None
        while time.time() - t_heal < self.args.recover_limit and not self.abort.is_set():
            if victim.poll() is not None:
                self.problems.append(f"{kind}: worker {victim.pid} exited (rc {victim.returncode}) "
                                     f"after a {secs:.1f}s partition; log {victim.log}")
                rec["recovered_s"] = "died"
                break
            cur = self.progress(victim)
            if cur is not None and base is not None and cur > base and self.worker_ready(victim):
                rec["recovered_s"] = round(time.time() - t_heal, 1)
                break
            time.sleep(0.2)
        if rec["recovered_s"] is None and not self.abort.is_set():
            self.problems.append(
                f"{kind}: worker {victim.pid} did not apply a callback again within "
                f"{self.args.recover_limit:.0f}s after a {secs:.1f}s partition from {server} "
                f"healed (ready={self.worker_ready(victim)}, progress {before}->{base}->"
                f"{self.progress(victim)}); log {victim.log}")
        rec["events"] = self.log_events(victim.log, t_cut - 0.5, time.time() + 0.5)
        log(f"{kind}: worker {victim.pid} healed after {secs:.1f}s; applied during the cut "
            f"{rec['progress_during']}, /readyz at its end "
            f"{'200' if rec.get('ready_during') else 'not 200'}; working again "
            f"{rec['recovered_s']}s after the heal; its warnings meanwhile: {rec['events']}")

    def fault_worker_mysql_partition(self):
        self.partition("worker_mysql_partition", self.mysql_port, "MariaDB")

    def fault_worker_broker_partition(self):
        self.partition("worker_broker_partition", self.amqp_port, "RabbitMQ")

    KINDS = ["worker_kill", "receiver_kill", "rabbitmq_restart", "redis_flush",
             "mariadb_restart", "broker_freeze", "poison", "sink_outage",
             "worker_mysql_partition", "worker_broker_partition"]
    PARTITIONS = ["worker_mysql_partition", "worker_broker_partition"]

    def fault_loop(self):
        order = []
        first = True
        while not self.stop_faults.is_set():
            if not order:
                order = list(self.args.faults)
                self.rng.shuffle(order)
                if first and all(k in order for k in self.PARTITIONS) and len(order) >= 4:
                    # The partitions are the longest faults: early in the first round, so
                    # that even --quick runs each of them (pop() takes from the end: they
                    # come 2nd and 4th).
                    rest = [k for k in order if k not in self.PARTITIONS]
                    parts = [k for k in order if k in self.PARTITIONS]
                    order = rest[2:] + [parts[1], rest[1], parts[0], rest[0]]
                    first = False
            kind = order.pop()
            t0 = time.time()
            try:
                getattr(self, "fault_" + kind)()
                self.faults.add(kind)
                log(f"fault {kind} done in {time.time() - t0:.1f}s")
            except Exception as e:  # a fault that could not be injected is a finding too
                self.problems.append(f"fault {kind} failed: {type(e).__name__}: {e}")
                log(f"fault {kind} FAILED: {e}")
            self.stop_faults.wait(self.args.fault_gap)

    # ---------------------------------------------------------------- drain + ledger
    def sql(self, q):
        return self.env.sql(q)

    def queue_counts(self):
        try:
            return self.env.queues()
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            return None

    def drained(self, acked_ids):
        q = self.queue_counts()
        if q is None:
            return False
        if q.get("paynotify.callbacks", {}).get("messages", 1) or \
                q.get("paynotify.notify", {}).get("messages", 1):
            return False
        if any(v.get("messages", 0) for k, v in q.items() if k.startswith("paynotify.notify.retry")):
            return False
        rows = self.sql(f"SELECT COUNT(*) FROM orders WHERE business='{self.env.business}' "
                        "AND status='PAID' AND notify_status NOT IN ('DELIVERED','FAILED')")
        if int(rows[0][0]):
            return False
        paid = int(self.sql(f"SELECT COUNT(*) FROM orders WHERE business='{self.env.business}' "
                            "AND status='PAID'")[0][0])
        return paid >= len(acked_ids)

    def ledger(self):
        L = collections.OrderedDict()
        pays = [p for p in self.payments if p.order_id]
        acked = {p.order_id: p for p in pays if p.acked}
        biz = self.env.business
        orders = {r[0]: {"status": r[1], "version": int(r[2]), "notify": r[3]}
                  for r in self.sql("SELECT id, status, version, notify_status FROM orders "
                                    f"WHERE business='{biz}'")}
        plog = collections.defaultdict(list)
        events = set()
        for oid, evt, outcome in self.sql(
                "SELECT p.order_id, p.provider_event_id, p.outcome FROM payment_log p "
                f"JOIN orders o ON o.id = p.order_id WHERE o.business='{biz}'"):
            plog[oid].append((evt, outcome))
            events.add(evt)
        notif = {r[0]: (r[1], r[2]) for r in self.sql(
            "SELECT order_id, status, webhook_id FROM notifications "
            f"WHERE business='{biz}' AND event_type='order.paid'")}
        alerts = {r[0] for r in self.sql(
            f"SELECT order_id FROM alerts WHERE kind='notify_failed' AND business='{biz}'")}

        hooks = collections.defaultdict(list)
        bad_sig = 0
        for req in self.sink.received():
            try:
                body = verify_standard_webhook(self.env.webhook_secret, req, tolerance=3600)
            except (Failure, ValueError) as e:
                bad_sig += 1
                self.problems.append(f"webhook does not verify: {e}")
                continue
            if body.get("type") != "order.paid":
                continue
            hooks[body["data"]["order_id"]].append(req["headers"]["webhook-id"])

        lost, doubled, wrong_version, no_hook, mixed_ids = [], [], [], [], []
        for oid in acked:
            applied = [e for e, o in plog.get(oid, []) if o == "applied"]
            if len(applied) == 0:
                lost.append(oid)
            elif len(applied) > 1:
                doubled.append(oid)
            if acked[oid].event_id not in events:
                if oid not in lost:
                    lost.append(oid)
            o = orders.get(oid)
            if o is None or o["status"] != "PAID" or o["version"] != 1:
                wrong_version.append((oid, o))
        for oid, rows in plog.items():
            if sum(1 for _, o in rows if o == "applied") > 1 and oid not in doubled:
                doubled.append(oid)
        for oid, o in orders.items():
            if o["status"] == "PAID":
                if o["version"] != 1 and (oid, o) not in wrong_version:
                    wrong_version.append((oid, o))
                ids = set(hooks.get(oid, []))
                if len(ids) > 1:
                    mixed_ids.append((oid, ids))
                if not ids:
                    n = notif.get(oid)
                    if not (o["notify"] == "FAILED" and n and n[0] == "FAILED" and oid in alerts):
                        no_hook.append((oid, o["notify"], n))
                elif notif.get(oid) and notif[oid][1] not in ids:
                    mixed_ids.append((oid, ids, notif[oid][1]))
        unpaid_hooks = [oid for oid in hooks if orders.get(oid, {}).get("status") != "PAID"]

        q = self.queue_counts() or {}
        qm = {k: v.get("messages") for k, v in q.items()}
        L["orders_created"] = self.cnt.get("orders_created")
        L["orders_not_created"] = self.cnt.get("orders_not_created")
        L["order_create_retries"] = self.cnt.get("orders_create_retried")
        for k in ["sent", "2xx", "5xx", "refused", "conn_error", "retried", "given_up"]:
            L["callbacks_" + k] = self.cnt.get("callbacks_" + k)
        other = {k: v for k, v in self.cnt.c.items()
                 if k.startswith("callbacks_") and k[10:].isdigit() and not k.startswith("callbacks_5")}
        L["callbacks_other_status"] = dict(other)
        L["duplicates"] = self.cnt.get("duplicates")
        L["concurrent_duplicate_sets"] = self.cnt.get("concurrent_duplicate_sets")
        L["faults"] = dict(self.faults.c)
        L["partitions"] = [f"{r['kind'].split('_')[1]} {r['seconds']}s, {r.get('conns')} conns, "
                           f"back after {r.get('recovered_s')}s" for r in self.partitions]
        L["orders_acknowledged"] = len(acked)
        L["orders_paid"] = sum(1 for o in orders.values() if o["status"] == "PAID")
        L["applied_rows"] = sum(1 for rows in plog.values() for _, o in rows if o == "applied")
        L["payment_log_rows"] = sum(len(rows) for rows in plog.values())
        L["webhooks_received"] = sum(len(v) for v in hooks.values())
        L["webhook_requests_beyond_first"] = L["webhooks_received"] - len(hooks)
        L["webhooks_bad_signature"] = bad_sig
        L["orders_with_webhook"] = len(hooks)
        L["notify_failed"] = sum(1 for o in orders.values() if o["notify"] == "FAILED")
        L["lost"] = len(lost)
        L["doubled"] = len(doubled)
        L["wrong_version_or_status"] = len(wrong_version)
        L["paid_without_webhook_or_alert"] = len(no_hook)
        L["webhook_id_mismatch"] = len(mixed_ids)
        L["webhooks_for_unpaid_orders"] = len(unpaid_hooks)
        L["poison_published"] = self.poison
        L["parked"] = qm.get("paynotify.callbacks.parked")
        L["queue_callbacks"] = qm.get("paynotify.callbacks")
        L["queue_notify"] = qm.get("paynotify.notify")
        L["queue_notify_dead"] = qm.get("paynotify.notify.dead")

        fail = []
        for name, items in [("lost", lost), ("doubled", doubled),
                            ("wrong_version_or_status", wrong_version),
                            ("paid_without_webhook_or_alert", no_hook),
                            ("webhook_id_mismatch", mixed_ids),
                            ("webhooks_for_unpaid_orders", unpaid_hooks)]:
            if items:
                fail.append(f"{name}: {len(items)}: {items[:5]}")
        if L["queue_callbacks"] != 0 or L["queue_notify"] != 0:
            fail.append(f"queues not empty after the drain: callbacks={L['queue_callbacks']} "
                        f"notify={L['queue_notify']}")
        if (L["parked"] or 0) < self.poison:
            fail.append(f"parked {L['parked']} < poison messages {self.poison}")
        if bad_sig:
            fail.append(f"{bad_sig} webhooks with a bad signature")
        if L["orders_acknowledged"] == 0:
            fail.append("no callback was ever acknowledged: the run proves nothing")
        return L, fail

    def prove_checker(self):
        """The ledger must be able to fail: hide one acknowledged order's applied row (a
        loss) and add a second applied row to another (a double), recount, then undo."""
        acked = [p for p in self.payments if p.acked]
        if len(acked) < 2:
            return ["checker self-test: fewer than 2 acknowledged orders"]
        a, b = acked[0].order_id, acked[1].order_id
        fake = "evt_chaos_selftest_" + secrets.token_hex(6)
        self.sql(f"UPDATE payment_log SET outcome='chaos_hidden' WHERE order_id='{a}' "
                 "AND outcome='applied'")
        self.sql("INSERT INTO payment_log (channel, kind, provider_event_id, event_type, "
                 "order_id, outcome, created_at) VALUES ('stripe', 'callback', "
                 f"'{fake}', 'payment_intent.succeeded', '{b}', 'applied', NOW(3))")
        saved = list(self.problems)
        try:
            L, _ = self.ledger()
        finally:
            self.problems[:] = saved
            self.sql(f"DELETE FROM payment_log WHERE provider_event_id='{fake}'")
            self.sql(f"UPDATE payment_log SET outcome='applied' WHERE order_id='{a}' "
                     "AND outcome='chaos_hidden'")
        if L["lost"] != 1 or L["doubled"] != 1:
            return [f"checker self-test: a planted loss and double were counted as "
                    f"lost={L['lost']} doubled={L['doubled']} (want 1 and 1)"]
        log("checker self-test: a planted loss and a planted double were both detected")
        return []

    # ---------------------------------------------------------------- run
    def run(self):
        a = self.args
        t_start = time.time()
        log(f"vhost {self.env.vhost}, business {self.env.business}, dir {self.env.dir}")
        self.start_receiver()
        self.start_worker()
        self.start_worker()
        # Providers retry until `grace` after the load stops (moved there below: the last
        # fault, a long partition say, may keep the load going past --seconds).
        self.retry_deadline = float("inf")
        pool = ThreadPoolExecutor(max_workers=48)
        faults = threading.Thread(target=self.fault_loop, daemon=True)
        self.fault_thread = faults
        futs_box = []
        loader = threading.Thread(target=lambda: futs_box.append(self.load(pool)), daemon=True)
        loader.start()
        time.sleep(min(3.0, a.seconds / 10))
        faults.start()
        self.stop_load.wait(a.seconds)
        # Last faults first: every fault restores what it broke before it returns.
        self.stop_faults.set()
        faults.join()
        left = self.net.rules_present()
        if left:
            self.problems.append(f"partition rules still present after the last fault: {left}")
        self.retry_deadline = time.time() + a.grace
        self.stop_load.set()
        loader.join()
        log(f"load stopped after {time.time() - t_start:.0f}s; providers retry until "
            f"{max(0, self.retry_deadline - time.time()):.0f}s from now")
        pool.shutdown(wait=True)
        # Every process must be alive at the end: restart whatever a fault left down.
        with self.proc_lock:
            dead = [p for p in self.workers if p.poll() is not None]
        for p in dead:
            self.problems.append(f"worker {p.pid} died by itself (rc {p.returncode}); "
                                 f"log {p.log}")
            self.kill9(p)
            self.start_worker()
        if self.receiver.poll() is not None:
            self.problems.append(f"receiver died by itself (rc {self.receiver.returncode}); "
                                 f"log {self.receiver.log}")
            self.start_receiver()
        acked_ids = [p.order_id for p in self.payments if p.acked]
        log(f"draining: {len(acked_ids)} acknowledged orders")
        t0 = time.time()
        ok = False
        while time.time() - t0 < a.drain:
            try:
                if self.drained(acked_ids):
                    ok = True
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(1)
        # Late duplicates (a redelivered copy, a second sweeper publish) get time to show.
        time.sleep(3)
        log(f"drain {'complete' if ok else 'TIMED OUT'} after {time.time() - t0:.0f}s")
        L, fail = self.ledger()
        fail += self.prove_checker()
        if not ok:
            fail.append(f"drain did not finish within {a.drain}s")
        fail += self.problems[:20]
        print("\n==== chaos ledger ====", flush=True)
        for k, v in L.items():
            print(f"{k:32} {v}", flush=True)
        print(f"{'elapsed_s':32} {time.time() - t_start:.0f}", flush=True)
        return L, fail

    def close(self):
        """Stops everything; returns a list of problems. The fault thread is stopped first
        (a partition in progress heals at once), then the processes, then the partition
        rules and cgroups go."""
        errs = []
        self.abort.set()
        self.stop_faults.set()
        self.retry_deadline = 0.0  # providers give up: the pool's threads end
        self.stop_load.set()
        if self.fault_thread is not None and self.fault_thread.is_alive():
            self.fault_thread.join(60)
        try:
            self.env.close()
        except Exception as e:
            errs.append(f"clean shutdown: {e}")
        self.sink.close()
        return errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 2 minutes (what ctest runs)")
    ap.add_argument("--seconds", type=float, help="load duration (default 480, --quick 65)")
    ap.add_argument("--rate", type=float, default=25.0, help="payments per second (default 25)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--recover-limit", type=float, default=None,
                    help="seconds a partitioned worker has, after the heal, to apply "
                         "callbacks again (default 45, --quick 30)")
    ap.add_argument("--partition", type=float, default=None,
                    help="length of every worker partition in seconds (default: 6-9; "
                         "without --quick the second one of each kind lasts 32-36 (MariaDB) "
                         "or 62-66 (RabbitMQ))")
    ap.add_argument("--faults", default=",".join(Chaos.KINDS),
                    help="comma-separated fault kinds to cycle (default: all of "
                         + ", ".join(Chaos.KINDS) + ")")
    a = ap.parse_args()
    a.faults = [k for k in a.faults.split(",") if k]
    bad = [k for k in a.faults if k not in Chaos.KINDS]
    if bad or not a.faults:
        ap.error(f"unknown fault kinds {bad}; known: {','.join(Chaos.KINDS)}")
    a.partition_fixed = a.partition is not None
    if a.seconds is None:
        a.seconds = 65.0 if a.quick else 480.0
    a.grace = 15.0
    a.drain = 60.0 if a.quick else 120.0
    a.fault_gap = 1.0 if a.quick else 3.0
    # Partitions: longer than the worker's connect and RPC timeouts (5 s), its broker
    # confirm timeout (PAYNOTIFY_CONFIRM_TIMEOUT, 2 s here) and its Redis timeout (1 s).
    # The full run makes the second partition of each kind long (see partition()).
    a.partition = (6.0, 9.0) if a.partition is None else (a.partition, a.partition)
    a.partition_long = {"worker_mysql_partition": (32.0, 36.0),
                        "worker_broker_partition": (62.0, 66.0)}
    if a.partition_fixed:
        a.partition_long = {k: a.partition for k in a.partition_long}
    if a.recover_limit is None:
        a.recover_limit = 30.0 if a.quick else 45.0
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "big")
    log(f"seed {a.seed}, load {a.seconds:.0f}s at {a.rate}/s")
    # SIGTERM (scripts/test's or scripts/chaos's cleanup, a ctest timeout) unwinds through
    # the finally blocks below, so that no DROP rule outlives the run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        a.net = netpart.NetPartition(os.environ.get("PAYNOTIFY_CHAOS_NET_TAG") or None)
    except (netpart.Unsupported, OSError) as e:
        print(f"\nCHAOS FAILED: the network partition faults cannot run here: {e}",
              flush=True)
        return 1
    c = None
    fail = ["did not finish"]
    try:
        try:
            for tag in netpart.sweep_stale():
                log(f"removed the partition rules/cgroups left by a dead run: {tag}")
            log(f"partition tag {a.net.tag}: self-test: {'; '.join(a.net.selftest())}")
        except (netpart.Unsupported, RuntimeError, OSError) as e:
            fail = [f"the network partition faults cannot run here: {e}"]
        else:
            c = Chaos(a)
            L, fail = c.run()
    finally:
        if c is not None:
            fail = list(fail) + c.close()
        net_problems = a.net.close()
        fail = list(fail) + [f"partition cleanup: {p}" for p in net_problems]
    if fail:
        print("\nCHAOS FAILED:", flush=True)
        for f in fail:
            print("  - " + str(f)[:2000], flush=True)
        if c is not None:
            print(f"logs: {c.env.dir}", flush=True)
        return 1
    print("\nCHAOS OK: 0 lost, 0 applied twice", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
