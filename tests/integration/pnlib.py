"""tests/integration/pnlib.py: the integration harness shared by the Python drivers.

It runs the real binaries against the real RabbitMQ, Redis and MariaDB that scripts/test
started (described by stack.env in the environment), a real HTTP sink standing in for a
business endpoint, and checks signatures with code independent of the C implementation
(Python's hmac), so a bug shared by signer and verifier cannot hide.
"""
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SOURCE = os.environ.get("PAYNOTIFY_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PAYNOTIFY_BUILD_DIR") or os.path.join(SOURCE, "build")
# Debian's interpreter: the fakes use Debian packages (python3-aiosmtpd, python3-cryptography).
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
STACK_SH = os.environ.get("PAYNOTIFY_STACK_SH") or os.path.join(SOURCE, "scripts/lib/stack.sh")


def need_env(name):
    v = os.environ.get(name)
    if not v:
        sys.exit(f"{name} is not set: run this through scripts/test, which starts the stack")
    return v


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def eq(got, want, what):
    if got != want:
        raise Failure(f"{what}: got {got!r}, want {want!r}")


def wait_for(pred, timeout, what, interval=0.1):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- HTTP client

def request(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    if isinstance(body, str):
        body = body.encode()
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


# ---------------------------------------------------------------- business sink

class Sink:
    """A business notify endpoint: records every request byte-exact. Answers `status`, or
    `fail_status` to the first `fail_first` requests; `delay` seconds before answering
    (a hanging endpoint); tracks the highest number of requests in progress at once."""

    def __init__(self, status=200, fail_first=0, fail_status=500, delay=0.0, headers=None):
        self.status = status
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.delay = delay
        self.extra_headers = headers or {}
        self.requests = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with sink.lock:
                    sink.active += 1
                    sink.max_active = max(sink.max_active, sink.active)
                    sink.requests.append({"path": self.path, "t": time.time(),
                                          "peer": self.client_address[1],
                                          "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": body})
                    status = sink.fail_status if len(sink.requests) <= sink.fail_first \
                        else sink.status
                    delay = sink.delay
                try:
                    if delay:
                        time.sleep(delay)
                    out = b"ok" if status < 300 else b"endpoint failure"
                    self.send_response(status)
                    for k, v in sink.extra_headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass
                finally:
                    with sink.lock:
                        sink.active -= 1

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeProcess:
    """One of tests/fakes/*.py as a real server process on a free port."""

    def __init__(self, script, *args):
        self.port = free_port()
        self.proc = subprocess.Popen([PYTHON, os.path.join(SOURCE, "tests/fakes", script),
                                      str(self.port), *args], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        check("ready" in line, f"{script} did not start: {line!r}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class StripeSim:
    """tests/fakes/stripe_sim.py: Stripe's refund API on a free port."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "stripe-sim")
        self.key = "sk_test_" + secrets.token_hex(12)
        self.fake = FakeProcess("stripe_sim.py", self.dir, self.key)
        self.url = f"http://127.0.0.1:{self.fake.port}"
        self.channel = {"api_key": self.key, "api_url": self.url}

    def _lines(self, name):
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def requests(self):
        return self._lines("requests.jsonl")

    def refunds(self):
        return self._lines("refunds.jsonl")

    def fail_next(self, n, status=503):
        request(self.fake.port, "POST", "/_control", json.dumps({"fail_next": n,
                                                                  "status": status}))

    def close(self):
        self.fake.close()


class Alerts:
    """The SMS sink (HTTP) and the SMTP sink (aiosmtpd) that receive on-call alerts."""

    def __init__(self, workdir):
        self.sms_file = os.path.join(workdir, "sms.jsonl")
        self.mail_dir = os.path.join(workdir, "mail")
        os.makedirs(self.mail_dir, exist_ok=True)
        self.sms = FakeProcess("sms_sink.py", self.sms_file)
        self.smtp = FakeProcess("smtp_sink.py", self.mail_dir)
        self.config = {"sms_url": f"http://127.0.0.1:{self.sms.port}/sms",
                       "sms_to": ["+8613800000000"],
                       "smtp_url": f"smtp://127.0.0.1:{self.smtp.port}",
                       "mail_from": "paynotify@example.com", "mail_to": ["oncall@example.com"]}

    def sms_messages(self):
        if not os.path.exists(self.sms_file):
            return []
        with open(self.sms_file) as f:
            return [json.loads(line) for line in f if line.strip()]

    def mails(self):
        out = []
        for name in sorted(os.listdir(self.mail_dir)):
            with open(os.path.join(self.mail_dir, name), errors="replace") as f:
                out.append(f.read())
        return out

    def close(self):
        self.sms.close()
        self.smtp.close()


def verify_standard_webhook(secret, req, tolerance=300):
    """Independent Standard Webhooks verification. Returns the parsed body."""
    h = req["headers"]
    wid, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    check(wid and ts and sigs, f"webhook headers missing: {h}")
    check(abs(int(ts) - time.time()) <= tolerance, "webhook timestamp out of tolerance")
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, f"{wid}.{ts}.".encode() + req["body"], hashlib.sha256).digest()
    expect = "v1," + base64.b64encode(mac).decode()
    check(any(hmac.compare_digest(expect, s) for s in sigs.split(" ")),
          f"webhook signature does not verify: {sigs}")
    eq(h.get("content-type"), "application/json", "webhook content type")
    return json.loads(req["body"])


# ---------------------------------------------------------------- Stripe

def stripe_event(order_id, amount, currency="usd", event_id=None, etype="payment_intent.succeeded",
                 txn=None):
    return json.dumps({
        "id": event_id or "evt_" + secrets.token_hex(8),
        "object": "event",
        "type": etype,
        "data": {"object": {"id": txn or "pi_" + secrets.token_hex(8), "object": "payment_intent",
                            "amount": amount, "amount_received": amount, "currency": currency,
                            "metadata": {"order_id": order_id}}},
    }, separators=(",", ":")).encode()


def stripe_sign(secret, body, t=None):
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


# ---------------------------------------------------------------- environment

class Env:
    """One test's configuration, processes and helpers."""

    def __init__(self, name, extra_env=None, alerts=None, allow_private=True, stripe_api=None,
                 extra_channels=None):
        self.dir = tempfile.mkdtemp(prefix=f"{name}-", dir=os.environ.get("PAYNOTIFY_TEST_DIR"))
        self.stack_dir = need_env("STACK_DIR")
        self.mysql_port = need_env("STACK_MYSQL_PORT")
        # A business name of its own: alert deduplication and storm summaries are per
        # business, and tests share one database.
        self.business = f"shop-{secrets.token_hex(4)}"
        self.api_key = "it_" + secrets.token_hex(16)
        self.other_key = "it_" + secrets.token_hex(16)
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.stripe_secret = "whsec_" + secrets.token_hex(16)
        with open(os.path.join(self.dir, "stripe_whsec.txt"), "w") as f:
            f.write(self.stripe_secret + "\n")
        self.config = os.path.join(self.dir, "config.json")
        with open(self.config, "w") as f:
            json.dump({
                "channels": {"stripe": dict({"type": "stripe",
                                             "webhook_secret_file": "stripe_whsec.txt"},
                                            **(stripe_api or {})),
                             **(extra_channels or {})},
                "businesses": {
                    self.business: {"api_keys": [self.api_key],
                                    "webhook_secret": self.webhook_secret,
                             "notify_url_prefixes": ["http://127.0.0.1:", "http://localhost:"],
                             "allow_private_network": allow_private},
                    "member": {"api_keys": [self.other_key],
                               "webhook_secret": "whsec_" + base64.b64encode(
                                   secrets.token_bytes(32)).decode(),
                               "notify_url_prefixes": ["http://127.0.0.1:"],
                               "allow_private_network": True}},
                **({"alerts": alerts.config} if alerts else {}),
            }, f)
        self.port = free_port()
        # A RabbitMQ vhost of its own: messages a test leaves behind (a crashed worker's,
        # a rejected test's) can never reach another test's workers.
        self.vhost = "t-" + secrets.token_hex(6)
        self.stack("ctl", "add_vhost", self.vhost)
        self.stack("ctl", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        # ... and a database of its own: another test's leftover outbox rows can never be
        # swept into this test's queues.
        self.dbname = "paynotify_t" + secrets.token_hex(6)
        self._mariadb("paynotify", f"CREATE DATABASE {self.dbname}")
        self.env = dict(os.environ)
        amqp = need_env("PAYNOTIFY_AMQP_URL").rstrip("/")
        mysql = need_env("PAYNOTIFY_MYSQL_URL").rsplit("/", 1)[0]
        self.env.update({"PAYNOTIFY_AMQP_URL": f"{amqp}/{self.vhost}",
                         "PAYNOTIFY_MYSQL_URL": f"{mysql}/{self.dbname}",
                         "PAYNOTIFY_CONFIG": self.config,
                         "PAYNOTIFY_LISTEN": f"127.0.0.1:{self.port}",
                         "PAYNOTIFY_SWEEP_INTERVAL": "1s",
                         "PAYNOTIFY_NOTIFY_TIMEOUT": "5s",
                         "PAYNOTIFY_CONFIRM_TIMEOUT": "3s"})
        self.env.update(extra_env or {})
        subprocess.run([os.path.join(BUILD, "paynotify-admin"), "migrate"], env=self.env,
                       check=True, capture_output=True)
        self.procs = []
        self.nlogs = 0

    # processes
    def start(self, binary, extra_env=None, wait_ready=True, _retry=False):
        env = dict(self.env)
        metrics_port = free_port()
        env["PAYNOTIFY_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
        env.update(extra_env or {})
        self.nlogs += 1
        log = os.path.join(self.dir, f"{binary}-{self.nlogs}.log")
        p = subprocess.Popen([os.path.join(BUILD, binary)], env=env,
                             stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        p.log = log
        p.metrics_port = metrics_port
        self.procs.append(p)
        if wait_ready:
            port = self.port if binary == "paynotify-receiver" else metrics_port
            try:
                wait_for(lambda: self._ready(port, p), 60, f"{binary} /readyz")
            except Failure:
                # free_port() races with every other process on the machine: a port taken
                # meanwhile gets fresh ports and one more start, nothing else.
                if _retry or p.poll() is None or b"Address already in use" not in \
                        open(log, "rb").read():
                    raise
                self.procs.remove(p)
                if binary == "paynotify-receiver" and "PAYNOTIFY_LISTEN" not in (extra_env or {}):
                    self.port = free_port()
                    self.env["PAYNOTIFY_LISTEN"] = f"127.0.0.1:{self.port}"
                return self.start(binary, extra_env, wait_ready, _retry=True)
        return p

    def _ready(self, port, p):
        if p.poll() is not None:
            raise Failure(f"{p.args[0]} exited with {p.returncode}; log:\n{self.tail(p)}")
        try:
            return request(port, "GET", "/readyz", timeout=5)[0] == 200
        except OSError:
            return False

    def tail(self, p, n=30):
        with open(p.log, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")

    def stop(self, p, timeout=30):
        """SIGTERM and require a clean exit 0."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                raise Failure(f"{p.args[0]} did not stop within {timeout}s on SIGTERM")
        eq(p.returncode, 0, f"exit status of {p.args[0]} after SIGTERM; log:\n{self.tail(p)}")

    def close(self):
        err = None
        for p in self.procs:
            try:
                self.stop(p)
            except Failure as e:
                err = err or e
        try:
            self.stack("ctl", "delete_vhost", self.vhost)
        except subprocess.CalledProcessError:
            pass
        if not err:  # a failed test keeps its database for a look
            self._mariadb("paynotify", f"DROP DATABASE IF EXISTS {self.dbname}")
        if err:
            raise err

    # business API
    def auth(self, key=None):
        return {"Authorization": "Bearer " + (key or self.api_key),
                "Content-Type": "application/json"}

    def create_order(self, notify_url, amount=1250, currency="USD", boid=None, key=None,
                     expect=201, channel="stripe", **extra):
        body = {"business_order_id": boid or "bo_" + secrets.token_hex(6), "amount": amount,
                "currency": currency, "channel": channel, "subject": "integration test",
                "notify_url": notify_url}
        body.update(extra)
        st, _, data = request(self.port, "POST", "/v1/orders", json.dumps(body), self.auth(key))
        eq(st, expect, f"POST /v1/orders status ({data!r})")
        return json.loads(data)

    def get_order(self, order_id, key=None):
        st, _, data = request(self.port, "GET", f"/v1/orders/{order_id}", None, self.auth(key))
        eq(st, 200, f"GET order status ({data!r})")
        return json.loads(data)

    def callback(self, body, sig=None, channel="stripe"):
        sig = stripe_sign(self.stripe_secret, body) if sig is None else sig
        return request(self.port, "POST", f"/v1/callbacks/{channel}", body,
                       {"Stripe-Signature": sig, "Content-Type": "application/json"})

    # MariaDB, through the real client
    def _mariadb(self, db, query):
        return subprocess.run(
            ["mariadb", "-h", "127.0.0.1", "-P", str(self.mysql_port), "-u", "paynotify",
             "-ppaynotify", db, "-N", "-B", "-e", query],
            check=True, capture_output=True, text=True).stdout

    def sql(self, query):
        return [line.split("\t") for line in self._mariadb(self.dbname, query).splitlines()]

    def scalar(self, query):
        rows = self.sql(query)
        return rows[0][0] if rows else None

    def queues(self):
        out = subprocess.run([os.path.join(BUILD, "paynotify-admin"), "queues"], env=self.env,
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def stack(self, *args):
        subprocess.run([STACK_SH, *args[:1], self.stack_dir, *args[1:]], check=True,
                       stdout=subprocess.DEVNULL)

    def metric(self, port, name_and_labels):
        _, _, data = request(port, "GET", "/metrics")
        total = 0
        for line in data.decode().splitlines():
            if line.startswith(name_and_labels + " ") or line.startswith(name_and_labels + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def run(tests):
    """Runs each test function, prints a line per test, exits non-zero on any failure."""
    failed = 0
    for t in tests:
        t0 = time.time()
        try:
            t()
            print(f"ok   {t.__name__} ({time.time() - t0:.1f}s)", flush=True)
        except Exception as e:  # report every failure, then fail the file
            failed += 1
            print(f"FAIL {t.__name__}: {type(e).__name__}: {e}", flush=True)
    sys.exit(1 if failed else 0)
