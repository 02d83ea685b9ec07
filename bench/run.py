#!/usr/bin/env python3
"""bench/run.py: the driver of scripts/bench. It runs every measurement of BENCHMARKS.md against
the private stack scripts/bench started (its stack.env is in the environment), with the real
binaries from the build directory and the C tools of bench/, prints the table, writes
bench/results/<UTC date-time>.json and updates the mode's section of BENCHMARKS.md.

Every process it starts is recorded in WORK/pids/ (scripts/bench's trap kills what is left)
and stopped in a finally block. Nothing here asserts a timing: numbers are the output. A
phase that fails is recorded with its error and the run goes on with the next one."""
import argparse
import base64
import collections
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Durations (s) and sizes per mode. Quick: < 2 minutes in all; full: < 15 minutes.
MODES = {
    "quick": {
        "yard_s": 3, "db_s": 3,
        "recv_probe": 1500, "recv_sat_s": 2.5, "recv_sat_warm": 0.5, "recv_conc": 64,
        "recv_lat_s": 2.5, "recv_lat_points": [0.5], "lat_warm": 0.5,
        "scale_points": [(1, 1), (1, 4), (2, 4)], "drain_s": 3,
        "e2e_sat_s": 5, "e2e_sat_warm": 1.5,
        "e2e_lat_s": 4, "e2e_lat_points": [0.5],
        "iso_s": 8, "iso_eventual_s": 3,
    },
    "full": {
        "yard_s": 10, "db_s": 10,
        "recv_probe": 3000, "recv_sat_s": 10, "recv_sat_warm": 2, "recv_conc": 64,
        "recv_lat_s": 10, "recv_lat_points": [0.25, 0.5, 0.75], "lat_warm": 1,
        "scale_points": [(1, 1), (1, 2), (1, 4), (1, 8), (2, 4)], "drain_s": 10,
        "e2e_sat_s": 20, "e2e_sat_warm": 4,
        "e2e_lat_s": 15, "e2e_lat_points": [0.5, 0.8],
        "iso_s": 15, "iso_eventual_s": 10,
    },
}
# The deployment scripts/up runs: PAYNOTIFY_WORKERS=2 processes of PAYNOTIFY_WORKER_THREADS=4.
E2E_PROCS, E2E_THREADS = 2, 4
NOTIFY_TIMEOUT = "2s"
# Connections of the open-loop load generator: enough that it never runs short below
# saturation (a missing connection would queue requests inside the generator).
OPEN_LOOP_CONNS = 256
CONFIRM_HIST = "paynotify_receiver_publish_confirm_seconds"

TARGETS = {
    "e2e_vs_yardstick": 0.30,
    "receiver_p99_ms_at_50": 25.0,
    "healthy_half_vs_all_healthy": 0.90,
    "worker_cpu_us_per_callback": 250.0,
    "receiver_cpu_us_per_callback": 100.0,
}

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, int(p / 100.0 * len(v)))
    return v[k]


def lat_summary(ms):
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": round(pct(ms, 50), 3), "p90": round(pct(ms, 90), 3),
            "p99": round(pct(ms, 99), 3), "p999": round(pct(ms, 99.9), 3),
            "max": round(max(ms), 3)}


class Proc:
    """A process we started: pid file for scripts/bench's trap, CPU and peak RSS from /proc."""

    def __init__(self, bench, name, argv, env=None, stdout=None):
        self.name = name
        self.bench = bench
        self.log = os.path.join(bench.work, "logs", f"{name}.log")
        self.logf = open(self.log, "ab")
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=stdout if stdout is not None else self.logf,
                                  stderr=self.logf, start_new_session=True)
        self.pid = self.p.pid
        self.pidfile = os.path.join(bench.work, "pids", f"{name}.pid")
        with open(self.pidfile, "w") as f:
            f.write(str(self.pid))
        bench.procs.append(self)

    def cpu_s(self):
        """utime + stime of every thread so far, in seconds (None once gone)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            return None

    def hwm_kb(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def ctxsw(self):
        """Context switches (voluntary + involuntary) of the live threads so far."""
        total = 0
        try:
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                try:
                    with open(f"/proc/{self.pid}/task/{tid}/status") as f:
                        for line in f:
                            if line.startswith(("voluntary_ctxt_switches",
                                                "nonvoluntary_ctxt_switches")):
                                total += int(line.split()[1])
                except OSError:
                    pass
        except OSError:
            return None
        return total

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=30):
        last = self.cpu_s()
        if last is not None:
            self.bench.retired_cpu += last
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.logf.close()
        try:
            os.unlink(self.pidfile)
        except OSError:
            pass


class Bench:
    def __init__(self, args):
        self.args = args
        self.mode = "quick" if args.quick else "full"
        self.m = MODES[self.mode]
        self.work = args.work
        self.build = args.build
        self.procs = []
        self.retired_cpu = 0.0
        for d in ("logs", "pids", "data", "perf"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
        self.env = dict(os.environ)
        self.amqp_base = self.env["PAYNOTIFY_AMQP_URL"].rstrip("/")
        self.mysql_port = self.env["STACK_MYSQL_PORT"]
        self.run_id = secrets.token_hex(3)
        self.results = {"mode": self.mode, "phases": {}, "errors": {}}
        self.seq = 0
        self._config()

    # ------------------------------------------------------------ setup

    def _config(self):
        self.stripe_secret = "whsec_" + secrets.token_hex(16)
        with open(os.path.join(self.work, "data", "stripe_whsec.txt"), "w") as f:
            f.write(self.stripe_secret + "\n")
        self.biz = {}
        for name in ("bench-a", "bench-b"):
            self.biz[name] = {
                "api_key": "bk_" + secrets.token_hex(16),
                "secret": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        self.config = os.path.join(self.work, "data", "config.json")
        with open(self.config, "w") as f:
            json.dump({
                "channels": {"stripe": {"type": "stripe",
                                        "webhook_secret_file": "stripe_whsec.txt"}},
                "businesses": {name: {"api_keys": [b["api_key"]],
                                      "webhook_secret": b["secret"],
                                      "notify_url_prefixes": ["http://127.0.0.1:"],
                                      "allow_private_network": True}
                               for name, b in self.biz.items()},
            }, f)

    def tool(self, name):
        return os.path.join(self.build, name)

    def stack_ctl(self, *args):
        subprocess.run([os.path.join(SOURCE, "scripts/lib/stack.sh"), "ctl",
                        self.env["STACK_DIR"], *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def make_vhosts(self, names):
        """All vhosts of the run in one rabbitmqctl call (each call costs ~0.8 s)."""
        path = os.path.join(self.work, "data", "vhosts.json")
        with open(path, "w") as f:
            json.dump({"vhosts": [{"name": n} for n in names],
                       "permissions": [{"user": "guest", "vhost": n, "configure": ".*",
                                        "write": ".*", "read": ".*"} for n in names]}, f)
        self.stack_ctl("import_definitions", path)

    def delete_vhost(self, name):
        try:
            self.stack_ctl("delete_vhost", name)
        except subprocess.CalledProcessError:
            pass

    def purge(self, vhost):
        """Empties paynotify.callbacks between receiver-only runs (nothing consumes there),
        so that each run starts with the queue a consumer would keep short."""
        self.stack_ctl("purge_queue", "-p", vhost, "paynotify.callbacks")

    def vhost(self, short):
        return f"bench-{self.run_id}-{short}"

    def amqp_url(self, vhost):
        return f"{self.amqp_base}/{vhost}"

    def proc_env(self, vhost, extra=None):
        env = dict(self.env)
        # The product's default retry schedule: in the isolation run the hanging endpoint's
        # failed attempts and deferrals go through the same delay queues as in production.
        env.pop("PAYNOTIFY_RETRY_DELAYS", None)
        env.update({"PAYNOTIFY_CONFIG": self.config,
                    "PAYNOTIFY_AMQP_URL": self.amqp_url(vhost),
                    "PAYNOTIFY_NOTIFY_TIMEOUT": NOTIFY_TIMEOUT})
        env.update(extra or {})
        return env

    def name(self, base):
        self.seq += 1
        return f"{self.seq:02d}-{base}"

    def wait_ready(self, proc, port, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{what} exited; see {proc.log}")
            try:
                if http_get(port, "/readyz", 2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready after {timeout}s; see {proc.log}")

    def start_receiver(self, vhost):
        port = free_port()
        p = Proc(self, self.name("receiver"), [self.tool("paynotify-receiver")],
                 env=self.proc_env(vhost, {"PAYNOTIFY_LISTEN": f"127.0.0.1:{port}"}))
        p.port = port
        self.wait_ready(p, port, "paynotify-receiver")
        return p

    def start_workers(self, vhost, procs, threads):
        out = []
        for _ in range(procs):
            mport = free_port()
            p = Proc(self, self.name(f"worker-t{threads}"), [self.tool("paynotify-worker")],
                     env=self.proc_env(vhost, {"PAYNOTIFY_WORKER_THREADS": str(threads),
                                               "PAYNOTIFY_METRICS_LISTEN": f"127.0.0.1:{mport}"}))
            p.port = mport
            out.append(p)
        for p in out:
            self.wait_ready(p, p.port, "paynotify-worker")
        return out

    def start_sink(self, label, secret, hang=False):
        out = os.path.join(self.work, "data", f"sink-{label}.txt")
        argv = [self.tool("bench-sink"), "--out", out, "--secret", secret]
        if hang:
            argv.append("--hang")
        p = Proc(self, self.name(f"sink-{label}"), argv, stdout=subprocess.PIPE)
        line = p.p.stdout.readline().decode()
        m = re.match(r"ready (\d+)", line)
        if not m:
            raise RuntimeError(f"bench-sink did not start: {line!r}")
        p.port = int(m.group(1))
        p.out = out
        p.url = f"http://127.0.0.1:{p.port}/hook"
        return p

    @staticmethod
    def sink_lines(sink):
        """order_id -> (first arrival ns, signature ok), plus duplicate count."""
        seen, dups, bad = {}, 0, 0
        try:
            with open(sink.out) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) != 3:
                        continue  # a line being written
                    t, oid, sig = int(parts[0]), parts[1], parts[2]
                    if sig == "0":
                        bad += 1
                    if oid in seen:
                        dups += 1
                    else:
                        seen[oid] = t
        except FileNotFoundError:
            pass
        return seen, dups, bad

    def histogram(self, proc, name):
        """(count, sum, {le: cumulative}) of a Prometheus histogram, or None."""
        try:
            _, data = http_get(proc.port, "/metrics")
        except OSError:
            return None
        count, total, buckets = 0.0, 0.0, {}
        for line in data.decode().splitlines():
            if line.startswith(name + "_bucket{"):
                m = re.search(r'le="([^"]+)"', line)
                le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
                buckets[le] = buckets.get(le, 0) + float(line.rsplit(" ", 1)[1])
            elif line.startswith(name + "_count"):
                count += float(line.rsplit(" ", 1)[1])
            elif line.startswith(name + "_sum"):
                total += float(line.rsplit(" ", 1)[1])
        return count, total, buckets

    @staticmethod
    def hist_delta(a, b):
        """Mean and bucket-bound p50/p99 (ms) of what a histogram saw between a and b."""
        if not a or not b or b[0] - a[0] <= 0:
            return None
        n = b[0] - a[0]
        out = {"n": int(n), "mean_ms": round((b[1] - a[1]) / n * 1000, 2)}
        for q, key in ((0.5, "p50_le_ms"), (0.99, "p99_le_ms")):
            for le in sorted(b[2]):
                if b[2][le] - a[2].get(le, 0) >= q * n:
                    out[key] = le * 1000 if le != float("inf") else None
                    break
        return out

    def metric(self, proc, name):
        try:
            _, data = http_get(proc.port, "/metrics")
        except OSError:
            return None
        total = 0.0
        for line in data.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def loadgen(self, port, reqfile, rate=None, concurrency=None, duration=None,
                connections=64, warmup=0.0, logfile=None, timeout=30):
        argv = [self.tool("bench-loadgen"), "--target", f"127.0.0.1:{port}",
                "--requests", reqfile, "--warmup", str(warmup), "--timeout", str(timeout)]
        if rate:
            argv += ["--rate", f"{rate:.1f}", "--connections", str(connections)]
            if duration:
                argv += ["--duration", str(duration)]
        else:
            argv += ["--concurrency", str(concurrency), "--duration", str(duration)]
        if logfile:
            argv += ["--log", logfile]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"bench-loadgen failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

    # ------------------------------------------------------------ requests

    @staticmethod
    def write_requests(path, reqs):
        with open(path, "wb") as f:
            for r in reqs:
                f.write(b"%d\n" % len(r))
                f.write(r)

    def create_orders(self, recv, label, n, sinks):
        """n orders through POST /v1/orders, alternating businesses bench-a / bench-b with
        notify URLs sinks[business]. Returns [(order_id, business)] in request order and the
        create rate."""
        prefix = f"bo-{self.run_id}-{label}-"
        names = ["bench-a", "bench-b"]
        reqs = []
        for i in range(n):
            b = names[i % 2]
            body = json.dumps({"business_order_id": f"{prefix}{i}", "amount": 1250,
                               "currency": "USD", "channel": "stripe",
                               "subject": "bench order", "notify_url": sinks[b]},
                              separators=(",", ":")).encode()
            reqs.append(b"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Authorization: Bearer " + self.biz[b]["api_key"].encode() +
                        b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                        % len(body) + body)
        path = os.path.join(self.work, "data", f"orders-{label}.req")
        self.write_requests(path, reqs)
        res = self.loadgen(recv.port, path, concurrency=32, duration=600, timeout=60)
        if res["ok"] != n:
            raise RuntimeError(f"creating {n} orders: only {res['ok']} answered 2xx: {res}")
        rows = self.mysql(
            f"SELECT business_order_id, id FROM orders WHERE business IN ('bench-a','bench-b')"
            f" AND business_order_id LIKE '{prefix}%'").split("\n")
        ids = {}
        for row in rows:
            if row:
                boid, oid = row.split("\t")
                ids[int(boid[len(prefix):])] = oid
        orders = [(ids[i], names[i % 2]) for i in range(n)]
        return orders, res["rate_ok"]

    @staticmethod
    def stripe_body(order_id):
        evt, pi = "evt_" + secrets.token_hex(12), "pi_" + secrets.token_hex(12)
        # A payment_intent.succeeded with the fields Stripe sends most often (~700 bytes).
        return json.dumps({
            "id": evt, "object": "event", "api_version": "2023-10-16", "created": 1700000000,
            "type": "payment_intent.succeeded", "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": {
                "id": pi, "object": "payment_intent", "amount": 1250, "amount_capturable": 0,
                "amount_received": 1250, "capture_method": "automatic",
                "confirmation_method": "automatic", "created": 1700000000, "currency": "usd",
                "customer": None, "description": "bench order", "latest_charge": "ch_bench",
                "livemode": False, "metadata": {"order_id": order_id},
                "payment_method": "pm_bench", "payment_method_types": ["card"],
                "status": "succeeded"}},
        }, separators=(",", ":")).encode()

    def callback_requests(self, label, orders):
        """Signs one callback per order now (Stripe's tolerance is 5 minutes) and writes the
        requests file. Returns its path."""
        t = int(time.time())
        reqs = []
        for oid, _ in orders:
            body = self.stripe_body(oid)
            mac = hmac.new(self.stripe_secret.encode(), f"{t}.".encode() + body,
                           hashlib.sha256).hexdigest()
            reqs.append(b"POST /v1/callbacks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/json\r\nStripe-Signature: t=%d,v1=%s\r\n"
                        b"Content-Length: %d\r\n\r\n" % (t, mac.encode(), len(body)) + body)
        path = os.path.join(self.work, "data", f"callbacks-{label}.req")
        self.write_requests(path, reqs)
        return path

    def envelope_size(self):
        """Bytes of the envelope the receiver publishes for one of our callbacks (the same JSON
        queue/envelope.c writes: json-c escapes '/')."""
        body = self.stripe_body("po_" + secrets.token_hex(12))
        sig = "t=1700000000,v1=" + "0" * 64
        env = json.dumps({"v": 1, "callback_id": "cb_" + "0" * 24, "channel": "stripe",
                          "received_at_ms": 1700000000000,
                          "headers": {"stripe-signature": sig},
                          "body_b64": base64.b64encode(body).decode()},
                         separators=(",", ":")).replace("/", "\\/")
        return len(env), len(body)

    # ------------------------------------------------------------ counters

    def server_counters(self):
        """Global MariaDB and Redis counters, for per-callback deltas."""
        out = {}
        rows = self.mysql("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions',"
                          " 'Com_commit', 'Innodb_data_fsyncs')")
        for line in rows.splitlines():
            k, v = line.split("\t")
            out["mysql_" + k.lower()] = int(v)
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", self.env["STACK_REDIS_PORT"],
                            "INFO", "commandstats"], capture_output=True, text=True).stdout
        # Round trips: the commands clients send (a script's inner calls are counted apart).
        calls = dict((m.group(1), int(m.group(2))) for m in
                     re.finditer(r"cmdstat_(\w+):calls=(\d+)", r))
        out["redis_round_trips"] = sum(calls.get(c, 0) for c in
                                       ("eval", "evalsha", "exists", "set", "get", "ping"))
        return out

    def server_pids(self, named=False):
        pids = {}
        for name in ("rabbitmq-beam", "mariadb", "redis"):
            try:
                with open(os.path.join(self.env["STACK_DIR"], "run", f"{name}.pid")) as f:
                    pids[name.split("-")[0]] = int(f.read().strip())
            except (OSError, ValueError):
                pass
        return pids if named else list(pids.values())

    def server_cpu(self):
        """CPU seconds so far of each server (RabbitMQ with its reaped helpers)."""
        out = {}
        for name, pid in self.server_pids(named=True).items():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[name] = sum(int(x) for x in fields[11:15]) / CLK_TCK
            except (OSError, ValueError):
                pass
        return out

    def cpu_snapshot(self):
        """Whole-machine busy and steal time, and the CPU of everything this run started or
        uses (our processes, the three servers, finished children, this driver), in seconds."""
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        busy = (sum(v) - v[3] - v[4] - v[7]) / CLK_TCK
        steal = v[7] / CLK_TCK
        ours = self.retired_cpu
        for p in self.procs:
            ours += p.cpu_s() or 0
        for pid in self.server_pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                # Including its reaped children: RabbitMQ's helper processes.
                ours += sum(int(x) for x in fields[11:15]) / CLK_TCK
            except (OSError, ValueError):
                pass
        t = os.times()
        ours += t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, steal, ours

    @staticmethod
    def interference(a, b):
        wall = b[0] - a[0]
        if wall <= 0:
            return {}
        busy, steal, ours = b[1] - a[1], b[2] - a[2], b[3] - a[3]
        return {"wall_s": round(wall, 1), "machine_busy_cores": round(busy / wall, 2),
                "ours_cores": round(ours / wall, 2),
                "others_cores": round(max(busy - ours, 0) / wall, 2),
                "steal_cores": round(steal / wall, 2)}

    # ------------------------------------------------------------ perf

    def perf_start(self, label, pids, seconds):
        if not self.args.perf:
            return None
        out = os.path.join(self.work, "perf", f"{label}.data")
        # DWARF unwinding: the build has no frame pointers (RelWithDebInfo, -O2).
        return subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999",
                                 "--call-graph", "dwarf,16384",
                                 "-o", out, "-p", ",".join(str(p) for p in pids), "--",
                                 "sleep", str(seconds)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def perf_finish(self, label, p):
        if p is None:
            return
        p.wait()
        data = os.path.join(self.work, "perf", f"{label}.data")
        for kind, extra in (("self", ["--no-children", "--sort", "dso,symbol"]),
                            ("children", ["--children", "--sort", "symbol"])):
            rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none",
                                  "--percent-limit", "0.5", *extra],
                                 capture_output=True, text=True).stdout
            with open(os.path.join(self.work, "perf", f"{label}-{kind}.txt"), "w") as f:
                f.write(rep)
        log(f"perf: reports in {self.work}/perf/{label}-*.txt")

    # ------------------------------------------------------------ phases

    def phase(self, name, fn):
        log(f"phase {name}")
        t0 = time.time()
        c0 = self.cpu_snapshot()
        try:
            self.results["phases"][name] = fn()
            self.results["phases"][name]["cpu_use"] = self.interference(c0, self.cpu_snapshot())
        except Exception as e:  # record and go on: one broken phase must not hide the rest
            log(f"phase {name} FAILED: {type(e).__name__}: {e}")
            self.results["errors"][name] = f"{type(e).__name__}: {e}"
        finally:
            for p in list(self.procs):
                if p.name.split("-", 1)[1].startswith(("receiver", "worker")):
                    p.stop()
                    self.procs.remove(p)
        log(f"phase {name} took {time.time() - t0:.1f}s")

    def p_yardstick(self):
        env_size, body_size = self.envelope_size()
        srv0 = self.server_cpu()
        r = subprocess.run([self.tool("bench-amqp-yardstick"), "--url",
                            self.amqp_url(self.vhost("yard")), "--seconds",
                            str(self.m["yard_s"]), "--size", str(env_size), "--window", "100",
                            "--prefetch", "100", "--queue-type", "quorum"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        amqp = json.loads(r.stdout)
        srv1 = self.server_cpu()
        amqp["publish_consume_per_s"] = min(amqp["publish_per_s"], amqp["consume_per_s"])
        # The broker's CPU per message published and consumed (the pipeline moves two
        # messages per callback: the callback and its notification).
        if "rabbitmq" in srv0 and "rabbitmq" in srv1 and amqp["consumed"]:
            amqp["broker_cpu_us_per_message"] = round(
                (srv1["rabbitmq"] - srv0["rabbitmq"]) / max(amqp["published"],
                                                             amqp["consumed"]) * 1e6, 1)
        self.delete_vhost(self.vhost("yard"))
        # A database of its own with the same schema, so that its rows never meet the
        # workers' sweeper and the product's tables keep their size.
        yard_db = f"paynotify_yard_{self.run_id}"
        self.mysql(f"CREATE DATABASE {yard_db}")
        url = self.env["PAYNOTIFY_MYSQL_URL"].rsplit("/", 1)[0] + "/" + yard_db
        env = dict(self.env, PAYNOTIFY_MYSQL_URL=url,
                   PAYNOTIFY_MIGRATIONS_DIR=os.path.join(SOURCE, "migrations"))
        subprocess.run([self.tool("paynotify-admin"), "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        db = {}
        try:
            db = self.db_yardstick_cpu(url)
        finally:
            self.mysql(f"DROP DATABASE {yard_db}")
        return {"envelope_bytes": env_size, "callback_body_bytes": body_size, "amqp": amqp,
                "db": db}

    def mysql(self, sql):
        return subprocess.run(
            ["mariadb", "-h", "127.0.0.1", "-P", str(self.mysql_port), "-u", "paynotify",
             "-ppaynotify", "paynotify", "-N", "-B", "-e", sql],
            check=True, capture_output=True, text=True).stdout

    def db_yardstick_one(self, url, mode):
        """One bench-db-yardstick run, with MariaDB's CPU per transaction (counted from the
        tool's "orders ready" line, so the bulk insert of the orders is left out)."""
        p = subprocess.Popen([self.tool("bench-db-yardstick"), "--url", url, "--mode", mode,
                              "--threads", str(E2E_PROCS * E2E_THREADS),
                              "--seconds", str(self.m["db_s"]),
                              "--orders", str(int(self.m["db_s"] * 6000))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = p.stderr.readline()
            s0 = self.server_cpu()
            out, err = p.communicate(timeout=self.m["db_s"] + 60)
            s1 = self.server_cpu()
        except BaseException:
            p.kill()
            p.wait()
            raise
        if p.returncode != 0:
            raise RuntimeError((first + err).strip())
        res = json.loads(out)
        if "mariadb" in s0 and "mariadb" in s1 and res["transactions"]:
            res["server_cpu_us_per_tx"] = round(
                (s1["mariadb"] - s0["mariadb"]) / res["transactions"] * 1e6, 1)
        return res

    def db_yardstick_cpu(self, url):
        return {mode: self.db_yardstick_one(url, mode) for mode in ("raw", "apply")}

    def p_receiver(self):
        m = self.m
        vh = self.vhost("recv")
        recv = self.start_receiver(vh)
        # A first short run sizes the rest (each callback needs an order of its own).
        probe_orders, create_rate = self.create_orders(recv, "rprobe", m["recv_probe"],
                                                       self.dead_urls)
        f = self.callback_requests("rprobe", probe_orders)
        probe = self.loadgen(recv.port, f, concurrency=m["recv_conc"], duration=30)
        self.purge(vh)
        guess = max(probe["rate_ok"], 100)
        n_sat = int(guess * m["recv_sat_s"] * 1.3)
        orders, create_rate2 = self.create_orders(recv, "rsat", n_sat, self.dead_urls)
        f = self.callback_requests("rsat", orders)
        cpu0, cs0 = recv.cpu_s(), recv.ctxsw()
        h0 = self.histogram(recv, CONFIRM_HIST)
        pp = self.perf_start("receiver", [recv.pid], max(1, m["recv_sat_s"] - 1))
        sat = self.loadgen(recv.port, f, concurrency=m["recv_conc"], duration=m["recv_sat_s"],
                           warmup=m["recv_sat_warm"])
        cpu1, cs1 = recv.cpu_s(), recv.ctxsw()
        sat["broker_confirm"] = self.hist_delta(h0, self.histogram(recv, CONFIRM_HIST))
        self.perf_finish("receiver", pp)
        self.purge(vh)
        # CPU over the whole run, divided by every callback it answered in that time.
        answered = sat["issued"]
        sat["cpu_s"] = round(cpu1 - cpu0, 3)
        sat["cpu_us_per_callback"] = round((cpu1 - cpu0) / max(answered, 1) * 1e6, 1)
        if cs0 is not None and cs1 is not None:
            sat["context_switches_per_callback"] = round((cs1 - cs0) / max(answered, 1), 2)
        if sat["issued"] >= n_sat:
            sat["note"] = "ran out of prepared callbacks before the duration"
        rmax = sat["rate_ok"]
        lat = {}
        for frac in m["recv_lat_points"]:
            rate = rmax * frac
            n = int(rate * m["recv_lat_s"])
            orders, _ = self.create_orders(recv, f"rlat{int(frac * 100)}", n, self.dead_urls)
            f = self.callback_requests(f"rlat{int(frac * 100)}", orders)
            h0 = self.histogram(recv, CONFIRM_HIST)
            r = self.loadgen(recv.port, f, rate=rate, connections=OPEN_LOOP_CONNS,
                             warmup=m["lat_warm"])
            r["broker_confirm"] = self.hist_delta(h0, self.histogram(recv, CONFIRM_HIST))
            lat[f"{int(frac * 100)}%"] = r
            self.purge(vh)
        hwm = recv.hwm_kb()
        recv.stop()
        self.delete_vhost(vh)
        return {"orders_create_per_s": round(max(create_rate, create_rate2), 1),
                "probe": probe, "saturation": sat, "max_rate": rmax, "open_loop": lat,
                "vmhwm_kb": hwm}

    def drain_point(self, vh, recv, procs, threads, n, label, perf=False):
        """Fills the queue with n accepted callbacks (no worker running), then starts the
        workers and times them until every webhook arrived."""
        orders, _ = self.create_orders(recv, label, n, self.healthy_urls)
        f = self.callback_requests(label, orders)
        fill = self.loadgen(recv.port, f, concurrency=32, duration=600)
        if fill["ok"] != n:
            raise RuntimeError(f"filling the queue: {fill['ok']} of {n} accepted")
        want = {oid for oid, _ in orders}
        sc0 = self.server_counters()
        t_start = time.monotonic_ns()
        workers = self.start_workers(vh, procs, threads)
        cpu0 = [w.cpu_s() for w in workers]
        srv0 = self.server_cpu()
        cs0 = [w.ctxsw() or 0 for w in workers]
        pp = self.perf_start("worker", [w.pid for w in workers], 4) if perf else None
        deadline = time.time() + max(60, n / 50)
        got = {}
        while time.time() < deadline:
            got = {}
            for s in self.sinks_healthy:
                seen, _, _ = self.sink_lines(s)
                got.update({k: v for k, v in seen.items() if k in want})
            if len(got) >= n:
                break
            time.sleep(0.1)
        cpu1 = [w.cpu_s() for w in workers]
        srv1 = self.server_cpu()
        cs1 = [w.ctxsw() or 0 for w in workers]
        sc1 = self.server_counters()
        self.perf_finish("worker", pp)

        def msum(name):
            return sum(self.metric(w, name) or 0 for w in workers)

        applied = msum("paynotify_worker_callbacks_total{outcome=\"applied\"}")
        retried = msum("paynotify_worker_callbacks_total{outcome=\"retried\"}")
        hist = {}
        for h in ("paynotify_worker_apply_seconds", "paynotify_worker_webhook_seconds"):
            cnt = msum(h + "_count")
            hist[h.replace("paynotify_worker_", "") + "_mean_ms"] = \
                round(msum(h + "_sum") / cnt * 1000, 2) if cnt else None
        hwm = max(w.hwm_kb() or 0 for w in workers)
        for w in workers:
            w.stop()
        times = sorted(got.values())
        out = {"procs": procs, "threads": threads, "callbacks": n, "delivered": len(got),
               "applied": applied, "retried": retried, "vmhwm_kb": hwm, **hist}
        # Round trips the pipeline made per callback (global counters: the stack is ours).
        out["per_callback"] = {k: round((sc1[k] - sc0[k]) / max(len(got), 1), 2)
                               for k in sc0 if k in sc1}
        out["per_callback"]["worker_context_switches"] = round(
            (sum(cs1) - sum(cs0)) / max(len(got), 1), 1)
        # What the servers spent on the same callbacks (the drain is all that runs).
        out["server_cpu_us_per_callback"] = {
            k: round((srv1[k] - srv0[k]) / max(len(got), 1) * 1e6, 1) for k in srv0 if k in srv1}
        ar = self.apply_rate(label)
        out["applied_per_s"] = ar.get("per_s")
        if len(times) >= 2:
            # From the first to the last webhook: the workers' start-up is not counted.
            span = (times[-1] - times[0]) / 1e9
            out["delivered_per_s"] = round((len(times) - 1) / span, 1) if span > 0 else None
            out["wall_s"] = round((times[-1] - t_start) / 1e9, 2)
        cpu = sum(b - a for a, b in zip(cpu0, cpu1) if a is not None and b is not None)
        out["cpu_s"] = round(cpu, 3)
        out["cpu_us_per_callback"] = round(cpu / max(len(got), 1) * 1e6, 1)
        return out

    def apply_rate(self, label):
        """The apply stage on its own: payment_log rows are written at apply time, so their
        count over the span of their timestamps is the rate callbacks were applied."""
        row = self.mysql(
            "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(p.created_at), MAX(p.created_at))"
            " FROM payment_log p JOIN orders o ON o.id = p.order_id WHERE o.business_order_id"
            f" LIKE 'bo-{self.run_id}-{label}-%' AND o.business IN ('bench-a','bench-b')").split()
        if len(row) == 2 and row[1] != "NULL" and int(row[1]) > 0:
            return {"applied": int(row[0]), "span_s": round(int(row[1]) / 1e6, 2),
                    "per_s": round((int(row[0]) - 1) / (int(row[1]) / 1e6), 1)}
        return {}

    def p_scaling(self):
        vh = self.vhost("drain")
        recv = self.start_receiver(vh)
        points = []
        # Size each point from the first one's rate: about drain_s seconds of work.
        rate = None
        for i, (procs, threads) in enumerate(self.m["scale_points"]):
            n = 600 if rate is None else max(600, int(rate * self.m["drain_s"]))
            perf = (procs, threads) == (1, E2E_THREADS)
            r = self.drain_point(vh, recv, procs, threads, n, f"d{i}", perf=perf)
            log(f"  {procs}x{threads}: {r.get('delivered_per_s')} webhooks/s,"
                f" {r['cpu_us_per_callback']} us CPU/callback")
            points.append(r)
            if r.get("delivered_per_s"):
                rate = max(rate or 0, r["delivered_per_s"] * (1.6 if i == 0 else 1.2))
        recv.stop()
        self.delete_vhost(vh)
        return {"points": points}

    def run_e2e(self, vh, label, rate, duration, urls_by_biz, watch_sinks, expect=None,
                wait_s=60):
        """Open loop at rate for duration with receiver + default workers running, then up
        to wait_s more (workers still running) until every expected webhook arrived (expect:
        a business, or None for all). Returns per-request latency (scheduled send -> webhook
        arrival) by business."""
        recv = self.start_receiver(vh)
        workers = self.start_workers(vh, E2E_PROCS, E2E_THREADS)
        n = max(1, int(rate * duration))
        orders, _ = self.create_orders(recv, label, n, urls_by_biz)
        f = self.callback_requests(label, orders)
        lgl = os.path.join(self.work, "data", f"loadgen-{label}.log")
        rc0, wc0 = recv.cpu_s(), [w.cpu_s() for w in workers]
        res = self.loadgen(recv.port, f, rate=rate, connections=OPEN_LOOP_CONNS, warmup=0,
                           logfile=lgl)
        rc1, wc1 = recv.cpu_s(), [w.cpu_s() for w in workers]
        sched = {}
        with open(lgl) as fh:
            for line in fh:
                i, s, _, _, st = line.split()
                sched[int(i)] = (int(s), int(st))
        t0 = min(s for s, _ in sched.values())
        want = {oid: i for i, (oid, _) in enumerate(orders)}
        n_expect = sum(1 for _, b in orders if expect is None or b == expect)
        deadline = time.time() + wait_s
        while True:
            got = {}
            for s in watch_sinks:
                seen, _, _ = self.sink_lines(s)
                got.update({k: v for k, v in seen.items() if k in want})
            if len(got) >= n_expect or time.time() > deadline:
                break
            time.sleep(0.2)
        counters = {}
        for key in ("applied", "retried", "parked", "duplicate_redis", "duplicate_mysql"):
            counters[key] = sum(self.metric(
                w, f"paynotify_worker_callbacks_total{{outcome=\"{key}\"}}") or 0
                for w in workers)
        counters["webhooks_delivered"] = sum(self.metric(
            w, "paynotify_worker_webhooks_total{outcome=\"delivered\"}") or 0 for w in workers)
        for outcome in ("failed", "deferred_endpoint_busy"):
            counters[f"webhooks_{outcome}"] = sum(self.metric(
                w, f"paynotify_worker_webhooks_total{{outcome=\"{outcome}\"}}") or 0
                for w in workers)
        hwm = {"receiver": recv.hwm_kb(), "worker": max(w.hwm_kb() or 0 for w in workers)}
        recv.stop()
        for w in workers:
            w.stop()
        return {"orders": orders, "sched": sched, "t0": t0, "got": got, "loadgen": res,
                "counters": counters, "hwm": hwm,
                "cpu": {"receiver_s": rc1 - rc0,
                        "workers_s": sum(b - a for a, b in zip(wc0, wc1))}}

    def p_e2e(self):
        m = self.m
        scale = self.results["phases"].get("scaling", {}).get("points", [])
        base = [p for p in scale if (p["procs"], p["threads"]) == (E2E_PROCS, E2E_THREADS)]
        drain = base[0].get("delivered_per_s") if base else None
        offered = 1.2 * (drain or 300)
        vh = self.vhost("e2e")
        recv = self.start_receiver(vh)
        workers = self.start_workers(vh, E2E_PROCS, E2E_THREADS)
        n = int(offered * m["e2e_sat_s"])
        orders, _ = self.create_orders(recv, "esat", n, self.healthy_urls)
        f = self.callback_requests("esat", orders)
        want = {oid for oid, _ in orders}
        rc0, wc0 = recv.cpu_s(), [w.cpu_s() for w in workers]
        t0 = time.monotonic_ns()
        res = self.loadgen(recv.port, f, rate=offered, connections=OPEN_LOOP_CONNS)
        t1 = time.monotonic_ns()
        rc1, wc1 = recv.cpu_s(), [w.cpu_s() for w in workers]
        got = {}
        for s in self.sinks_healthy:
            seen, _, _ = self.sink_lines(s)
            got.update({k: v for k, v in seen.items() if k in want})
        hwm = {"receiver": recv.hwm_kb(), "worker": max(w.hwm_kb() or 0 for w in workers)}
        recv.stop()
        for w in workers:
            w.stop(timeout=60)
        self.delete_vhost(vh)
        applied = self.apply_rate("esat")
        lo = t0 + int(m["e2e_sat_warm"] * 1e9)
        in_window = [t for t in got.values() if lo <= t <= t1]
        window = (t1 - lo) / 1e9
        rate = len(in_window) / window if window > 0 else 0
        delivered_run = len([t for t in got.values() if t0 <= t <= t1])
        sat = {"offered_per_s": round(offered, 1), "seconds": round((t1 - t0) / 1e9, 2),
               "accepted": res["ok"], "receiver_p99_ms": res["latency_ms"]["p99"],
               "delivered_in_window": len(in_window), "window_s": round(window, 2),
               "sustained_per_s": round(rate, 1), "apply_stage": applied,
               "cpu_us_per_callback": {
                   "receiver": round((rc1 - rc0) / max(res["ok"], 1) * 1e6, 1),
                   "workers": round(sum(b - a for a, b in zip(wc0, wc1)) /
                                    max(delivered_run, 1) * 1e6, 1)},
               "vmhwm_kb": hwm}
        self.e2e_rate = rate
        lat = {}
        for frac in m["e2e_lat_points"]:
            label = f"elat{int(frac * 100)}"
            vh = self.vhost(label)
            r = self.run_e2e(vh, label, rate * frac, m["e2e_lat_s"], self.healthy_urls,
                             self.sinks_healthy)
            self.delete_vhost(vh)
            lat[f"{int(frac * 100)}%"] = self.e2e_summary(r, m["e2e_lat_s"])
            if frac == 0.5:
                self.baseline = lat["50%"]
        return {"saturation": sat, "latency": lat}

    def e2e_summary(self, r, duration):
        by = {"all": [], "bench-a": [], "bench-b": []}
        in_time = {"bench-a": 0, "bench-b": 0}
        t_end = r["t0"] + int((duration + 2) * 1e9)
        for i, (oid, biz) in enumerate(r["orders"]):
            if oid in r["got"] and i in r["sched"]:
                ms = (r["got"][oid] - r["sched"][i][0]) / 1e6
                by["all"].append(ms)
                by[biz].append(ms)
                if r["got"][oid] <= t_end:
                    in_time[biz] += 1
        n_biz = {b: sum(1 for _, x in r["orders"] if x == b) for b in in_time}
        return {"offered_per_s": round(r["loadgen"]["rate_offered"], 1),
                "callbacks": len(r["orders"]), "accepted": r["loadgen"]["ok"],
                "receiver_latency_ms": r["loadgen"]["latency_ms"],
                "delivered": len(r["got"]),
                "latency_ms": {k: lat_summary(v) for k, v in by.items()},
                "delivered_by_end_plus_2s": in_time, "callbacks_by_business": n_biz,
                "rate_by_end_plus_2s_per_s": {b: round(in_time[b] / duration, 1)
                                              for b in in_time},
                "counters": r["counters"], "vmhwm_kb": r["hwm"],
                "cpu_us_per_callback": {
                    "receiver": round(r["cpu"]["receiver_s"] / max(len(r["orders"]), 1) * 1e6, 1),
                    "workers": round(r["cpu"]["workers_s"] / max(len(r["got"]), 1) * 1e6, 1)}}

    def p_isolation(self):
        m = self.m
        rate = self.e2e_rate * 0.5
        vh = self.vhost("iso")
        urls = {"bench-a": self.sink_a.url, "bench-b": self.sink_hang.url}
        # Only the healthy sink delivers: the hanging one's arrivals are attempts, counted
        # below. The workers keep running iso_eventual_s after the load for the healthy
        # half's stragglers.
        r = self.run_e2e(vh, "iso", rate, m["iso_s"], urls, [self.sink_a], expect="bench-a",
                         wait_s=2 + m["iso_eventual_s"])
        self.delete_vhost(vh)
        out = self.e2e_summary(r, m["iso_s"])
        healthy = {oid for oid, b in r["orders"] if b == "bench-a"}
        seen = r["got"]
        out["healthy_delivered_eventually"] = len(healthy & seen.keys())
        hang_seen, _, _ = self.sink_lines(self.sink_hang)
        hanging = {oid for oid, b in r["orders"] if b == "bench-b"}
        out["hanging_attempts_started"] = len(hanging & hang_seen.keys())
        # Healthy webhooks per second of the run: paced by the hanging endpoint when the
        # notify consumer's prefetch is full of messages waiting for it.
        t0 = r["t0"]
        per_s = collections.Counter(int((t - t0) / 1e9) for oid, t in seen.items()
                                    if oid in healthy)
        hang_per_s = collections.Counter(int((t - t0) / 1e9) for oid, t in hang_seen.items()
                                         if oid in hanging)
        n = int(m["iso_s"] + m["iso_eventual_s"]) + 3
        out["healthy_per_second"] = [per_s.get(i, 0) for i in range(n)]
        out["hanging_attempts_per_second"] = [hang_per_s.get(i, 0) for i in range(n)]
        return out

    # ------------------------------------------------------------ main

    def machine(self):
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        versions = {}
        for pkg in ("rabbitmq-server", "mariadb-server", "redis-server", "librabbitmq4",
                    "libuv1"):
            r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                               text=True)
            versions[pkg] = r.stdout.strip() or None
        return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gb": round(mem_kb / 2**20, 1),
                "kernel": os.uname().release, "loadavg_at_start": load, "versions": versions}

    def run(self):
        self.results["started_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        self.results["command"] = "scripts/bench" + (" --quick" if self.args.quick else "") + (
            " --perf" if self.args.perf else "")
        self.results["machine"] = self.machine()
        try:
            self.results["git"] = subprocess.run(
                ["git", "-C", SOURCE, "describe", "--always", "--dirty"],
                capture_output=True, text=True).stdout.strip()
        except OSError:
            self.results["git"] = None
        self.results["config"] = {"e2e_workers": E2E_PROCS, "e2e_threads": E2E_THREADS,
                                  "notify_timeout": NOTIFY_TIMEOUT, "queue_type": "quorum",
                                  "log_level": "info", "durations": self.m}
        t_start = time.time()
        names = [self.vhost(v) for v in ("yard", "recv", "drain", "e2e", "iso")] + \
            [self.vhost(f"elat{int(f * 100)}") for f in self.m["e2e_lat_points"]]
        self.make_vhosts(names)
        # Sinks live for the whole run; each phase picks its own orders out of their files.
        self.sink_a = self.start_sink("a", self.biz["bench-a"]["secret"])
        self.sink_b = self.start_sink("b", self.biz["bench-b"]["secret"])
        self.sink_hang = self.start_sink("hang", self.biz["bench-b"]["secret"], hang=True)
        self.sinks_healthy = [self.sink_a, self.sink_b]
        self.healthy_urls = {"bench-a": self.sink_a.url, "bench-b": self.sink_b.url}
        # Receiver-only phases: nothing consumes, the URLs are never called.
        self.dead_urls = {"bench-a": "http://127.0.0.1:9/a", "bench-b": "http://127.0.0.1:9/b"}
        self.e2e_rate = 0
        self.baseline = None
        self.phase("yardstick", self.p_yardstick)
        self.phase("receiver", self.p_receiver)
        self.phase("scaling", self.p_scaling)
        self.phase("e2e", self.p_e2e)
        if self.e2e_rate > 0:
            self.phase("isolation", self.p_isolation)
        self.results["elapsed_s"] = round(time.time() - t_start, 1)
        self.summarise()

    def stop_all(self):
        for p in self.procs:
            p.stop(timeout=15)
        self.procs = []

    # ------------------------------------------------------------ report

    def summarise(self):
        ph = self.results["phases"]
        y = ph.get("yardstick", {})
        rcv = ph.get("receiver", {})
        e2e = ph.get("e2e", {})
        iso = ph.get("isolation", {})
        sc = ph.get("scaling", {}).get("points", [])
        ratios = {}
        amqp = y.get("amqp", {})
        if amqp and e2e.get("saturation"):
            ratios["e2e_vs_yardstick"] = e2e["saturation"]["sustained_per_s"] / \
                amqp["publish_consume_per_s"]
        if amqp and rcv.get("max_rate"):
            ratios["receiver_vs_yardstick_publish"] = rcv["max_rate"] / amqp["publish_per_s"]
        if iso and self.baseline:
            a_iso = iso["rate_by_end_plus_2s_per_s"]["bench-a"]
            a_base = self.baseline["rate_by_end_plus_2s_per_s"]["bench-a"]
            if a_base:
                ratios["healthy_half_vs_all_healthy"] = a_iso / a_base
        self.results["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
        self.results["targets"] = TARGETS

    def table(self):
        R = self.results
        ph = R["phases"]
        lines = []

        def row(what, value, target=""):
            lines.append(f"| {what} | {value} | {target} |")

        def num(v, unit=""):
            if v is None:
                return "n/a"
            if isinstance(v, float):
                v = f"{v:,.1f}" if v >= 100 else f"{v:.2f}"
            return f"{v}{unit}"

        mach = R["machine"]
        others = [p["cpu_use"]["others_cores"] for p in ph.values()
                  if p.get("cpu_use", {}).get("others_cores") is not None]
        steal = [p["cpu_use"]["steal_cores"] for p in ph.values()
                 if p.get("cpu_use", {}).get("steal_cores") is not None]
        lines.append(f"`{R['command']}` — {R['started_utc']}, {mach['nproc']} CPUs "
                     f"({mach['cpu_model']}), git {R.get('git')}, {R['elapsed_s']} s. "
                     f"Load average at start {' '.join(mach['loadavg_at_start'])}; CPU taken "
                     f"by processes outside the benchmark: "
                     f"{max(others) if others else 'n/a'} cores at most in one phase, "
                     f"steal {max(steal) if steal else 'n/a'} cores at most.")
        lines.append("")
        lines.append("| measurement | result | target |")
        lines.append("|---|---|---|")
        y = ph.get("yardstick")
        if y:
            a = y["amqp"]
            row(f"yardstick: RabbitMQ quorum queue, {a['size']} B persistent, "
                f"{a['window']} confirms outstanding, publish", num(a["publish_per_s"], " msg/s"))
            row(f"yardstick: same queue, consume with manual ack (prefetch {a['prefetch']}), "
                "concurrently", f"{num(a['consume_per_s'], ' msg/s')}; broker CPU "
                f"{a.get('broker_cpu_us_per_message', 'n/a')} µs per message")
            for mode, what in (("raw", "the apply statements alone"),
                               ("apply", "orders_apply_event()")):
                d = y["db"][mode]
                row(f"yardstick: MariaDB, {what}, {d['threads']} threads",
                    f"{num(d['tx_per_s'], ' tx/s')} (p50 {d['latency_ms']['p50']} ms, "
                    f"p99 {d['latency_ms']['p99']} ms); server CPU "
                    f"{d.get('server_cpu_us_per_tx', 'n/a')} µs per transaction")
        r = ph.get("receiver")
        if r:
            s = r["saturation"]
            row("orders created through POST /v1/orders (32 connections)",
                num(r["orders_create_per_s"], "/s"))
            row(f"receiver: accepted callbacks, closed loop, {s['connections']} connections",
                f"{num(s['rate_ok'], '/s')} (p50 {s['latency_ms']['p50']} ms, "
                f"p99 {s['latency_ms']['p99']} ms)")
            for k, v in r["open_loop"].items():
                t = f"p99 ≤ {TARGETS['receiver_p99_ms_at_50']} ms" if k == "50%" else ""
                bc = v.get("broker_confirm") or {}
                row(f"receiver: open loop at {k} of max ({v['rate_offered']:.0f}/s offered, "
                    f"{v['connections']} connections)",
                    f"p50 {v['latency_ms']['p50']} / p99 {v['latency_ms']['p99']} / "
                    f"p99.9 {v['latency_ms']['p999']} ms, {v['errors'] + v['unanswered']} "
                    f"failed; broker confirm mean {bc.get('mean_ms', 'n/a')} ms", t)
            row("receiver: CPU per accepted callback (saturation)",
                f"{num(s['cpu_us_per_callback'], ' µs')}, "
                f"{s.get('context_switches_per_callback', 'n/a')} context switches",
                f"≤ {TARGETS['receiver_cpu_us_per_callback']:.0f} µs")
            row("receiver: peak RSS (VmHWM)", num(r["vmhwm_kb"], " kB"))
        sc = ph.get("scaling")
        if sc:
            for p in sc["points"]:
                is_base = (p["procs"], p["threads"]) == (E2E_PROCS, E2E_THREADS)
                row(f"worker drain: {p['procs']} process(es) × {p['threads']} threads, "
                    f"{p['callbacks']} queued callbacks",
                    f"apply {num(p.get('applied_per_s'), '/s')}, webhooks "
                    f"{num(p.get('delivered_per_s'), '/s')}, "
                    f"{num(p['cpu_us_per_callback'], ' µs CPU/callback')}, "
                    f"VmHWM {p['vmhwm_kb']} kB",
                    f"≤ {TARGETS['worker_cpu_us_per_callback']:.0f} µs" if is_base else "")
                if is_base:
                    pc = p.get("per_callback", {})
                    row(f"worker drain {p['procs']}×{p['threads']}: per callback",
                        f"{pc.get('mysql_questions', 'n/a')} SQL statements, "
                        f"{pc.get('mysql_com_commit', 'n/a')} COMMITs, "
                        f"{pc.get('mysql_innodb_data_fsyncs', 'n/a')} InnoDB fsyncs, "
                        f"{pc.get('redis_round_trips', 'n/a')} Redis round trips, "
                        f"{pc.get('worker_context_switches', 'n/a')} worker context switches; "
                        f"server CPU: " + ", ".join(
                            f"{k} {v} µs" for k, v in p.get("server_cpu_us_per_callback",
                                                            {}).items()) + "; "
                        f"mean apply {p.get('apply_seconds_mean_ms')} ms, "
                        f"mean webhook {p.get('webhook_seconds_mean_ms')} ms")
        e = ph.get("e2e")
        if e:
            s = e["saturation"]
            row(f"end to end: sustained webhooks/s ({s['offered_per_s']:.0f}/s offered, "
                f"{E2E_PROCS}×{E2E_THREADS} workers)",
                f"{num(s['sustained_per_s'], '/s')} (apply stage meanwhile "
                f"{num(s.get('apply_stage', {}).get('per_s'), '/s')})")
            for k, v in e["latency"].items():
                la = v["latency_ms"]["all"]
                row(f"end to end: callback → webhook at {k} of sustained "
                    f"({v['offered_per_s']:.0f}/s)",
                    f"p50 {la.get('p50')} / p99 {la.get('p99')} / p99.9 {la.get('p999')} ms, "
                    f"{v['delivered']}/{v['callbacks']} delivered")
                c = v["cpu_us_per_callback"]
                row(f"end to end at {k}: CPU per callback, receiver / workers",
                    f"{c['receiver']} / {c['workers']} µs",
                    f"≤ {TARGETS['receiver_cpu_us_per_callback']:.0f} / "
                    f"≤ {TARGETS['worker_cpu_us_per_callback']:.0f} µs")
        i = ph.get("isolation")
        if i and self.baseline:
            la, lb = i["latency_ms"]["bench-a"], self.baseline["latency_ms"]["bench-a"]
            row("isolation: healthy half, webhooks/s by end+2 s (all healthy → half hanging)",
                f"{self.baseline['rate_by_end_plus_2s_per_s']['bench-a']} → "
                f"{i['rate_by_end_plus_2s_per_s']['bench-a']}")
            row("isolation: healthy half latency p50 / p99 (all healthy → half hanging)",
                f"{lb.get('p50')} / {lb.get('p99')} → {la.get('p50')} / {la.get('p99')} ms")
            row(f"isolation: healthy half delivered by {2 + self.m['iso_eventual_s']} s after "
                "the end of the load (workers still running)",
                f"{i['healthy_delivered_eventually']}/{i['callbacks_by_business']['bench-a']}")
            c = i.get("counters", {})
            row("isolation: hanging endpoint's attempts started / failed / deferred "
                "(endpoint busy)",
                f"{i.get('hanging_attempts_started')} / {c.get('webhooks_failed', 'n/a'):.0f} / "
                f"{c.get('webhooks_deferred_endpoint_busy', 'n/a'):.0f}")
            row("isolation: healthy webhooks per second of the run (hanging endpoint's "
                "attempts per second)",
                " ".join(f"{a}({b})" for a, b in zip(i.get("healthy_per_second", []),
                                                     i.get("hanging_attempts_per_second", []))))
        lines.append("")
        lines.append("| ratio | value | target |")
        lines.append("|---|---|---|")
        rt = R.get("ratios", {})
        for key, what, tgt in (
                ("e2e_vs_yardstick", "end-to-end rate ÷ yardstick publish+consume rate",
                 f"≥ {TARGETS['e2e_vs_yardstick']:.2f}"),
                ("receiver_vs_yardstick_publish", "receiver rate ÷ yardstick publish rate", ""),
                ("healthy_half_vs_all_healthy", "healthy-half rate ÷ all-healthy rate",
                 f"≥ {TARGETS['healthy_half_vs_all_healthy']:.2f}")):
            lines.append(f"| {what} | {rt.get(key, 'n/a')} | {tgt} |")
        if R["errors"]:
            lines.append("")
            for k, v in R["errors"].items():
                lines.append(f"* phase **{k}** failed: {v}")
        return "\n".join(lines)


def update_benchmarks_md(path, mode, table, json_rel):
    begin, end = f"<!-- bench:{mode}:begin -->", f"<!-- bench:{mode}:end -->"
    block = f"{begin}\n{table}\n\nRaw numbers: [`{json_rel}`]({json_rel})\n{end}"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## Latest `scripts/bench{' --quick' if mode == 'quick' else ''}`\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--work", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--no-write", action="store_true", help="print only; no results file")
    args = ap.parse_args()
    # SIGTERM (scripts/bench's trap) unwinds like an exception, so finally stops everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    b = Bench(args)
    try:
        b.run()
    finally:
        b.stop_all()
    table = b.table()
    print()
    print(table)
    if not args.no_write:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        rel = f"bench/results/{stamp}.json"
        os.makedirs(os.path.join(SOURCE, "bench/results"), exist_ok=True)
        with open(os.path.join(SOURCE, rel), "w") as f:
            json.dump(b.results, f, indent=1, sort_keys=True)
            f.write("\n")
        update_benchmarks_md(os.path.join(SOURCE, "BENCHMARKS.md"), b.mode, table, rel)
        print(f"\nwrote {rel} and updated BENCHMARKS.md")
    return 1 if b.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
