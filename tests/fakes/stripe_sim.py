#!/usr/bin/env python3
"""tests/fakes/stripe_sim.py PORT STATEDIR SECRET_KEY: a local stand-in for Stripe's refund
API, a real HTTP server.

POST /v1/refunds (form-encoded, `Authorization: Bearer SECRET_KEY`, `Idempotency-Key`
required) creates a refund and answers like Stripe; the same Idempotency-Key again returns
the same refund and creates nothing. Every request is appended to STATEDIR/requests.jsonl,
every refund created to STATEDIR/refunds.jsonl. POST /_control {"fail_next": N,
"status": 503} makes the next N refund requests fail with that status. Prints "ready" once
listening; stops on SIGTERM."""
import http.server
import json
import os
import secrets
import signal
import sys
import threading
import urllib.parse

port, statedir, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.makedirs(statedir, exist_ok=True)
lock = threading.Lock()
by_key = {}
control = {"fail_next": 0, "status": 503}


def append(name, obj):
    with open(os.path.join(statedir, name), "a") as f:
        f.write(json.dumps(obj) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, obj):
        out = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/_control":
            with lock:
                control.update(json.loads(body))
            return self.reply(200, control)
        if self.path != "/v1/refunds":
            return self.reply(404, {"error": {"message": "unknown path"}})
        form = dict(urllib.parse.parse_qsl(body.decode(), strict_parsing=True))
        idem = self.headers.get("Idempotency-Key")
        append("requests.jsonl", {"path": self.path, "form": form, "idempotency_key": idem,
                                  "authorization": self.headers.get("Authorization")})
        if self.headers.get("Authorization") != f"Bearer {key}":
            return self.reply(401, {"error": {"message": "Invalid API Key provided"}})
        with lock:
            if control["fail_next"] > 0:
                control["fail_next"] -= 1
                return self.reply(control["status"], {"error": {"message": "simulated outage"}})
            if not idem:
                return self.reply(400, {"error": {"message": "Idempotency-Key required here"}})
            if "payment_intent" not in form or not form.get("amount", "").isdigit():
                return self.reply(400, {"error": {"message": "payment_intent and amount"}})
            if idem in by_key:
                return self.reply(200, by_key[idem])
            refund = {"id": "re_" + secrets.token_hex(8), "object": "refund",
                      "amount": int(form["amount"]), "payment_intent": form["payment_intent"],
                      "status": "succeeded", "metadata": {"order_id": form.get("metadata[order_id]")}}
            by_key[idem] = refund
            append("refunds.jsonl", dict(refund, idempotency_key=idem))
        return self.reply(200, refund)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
print("ready", flush=True)
server.serve_forever()
