#!/usr/bin/env python3
"""tests/fakes/wechatpay_sim.py: a WeChat Pay API v3 simulator for tests, written apart
from channel/wechatpay.c (Python's `cryptography`, not OpenSSL's C API through our code) so
that a mistake shared by signer and verifier cannot hide.

Server:  wechatpay_sim.py PORT STATEDIR [options]
    A real HTTP server on 127.0.0.1:PORT (0 = any free port) acting as api.mch.weixin.qq.com:
      GET  /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=...   query
      POST /v3/refund/domestic/refunds                                   refund
    Every request's Authorization (WECHATPAY2-SHA256-RSA2048) is checked with the merchant's
    PUBLIC key (401 SIGN_ERROR, unsigned, when it fails); every other answer is signed with
    the platform PRIVATE key (Wechatpay-Timestamp/-Nonce/-Serial/-Signature). Refunds are
    idempotent per out_refund_no. Prints "ready PORT" once listening; SIGTERM stops it.

    STATEDIR/requests.jsonl   one JSON line per API request: method, path, headers, body,
                              auth_ok, auth_error, status (written before the answer is sent)
    STATEDIR/transactions.json  {out_trade_no: transaction} read at start, rewritten on change
    STATEDIR/refunds.json     {out_refund_no: refund}, rewritten on change

    Control (not signed, not recorded):
      POST /_control {"fail_next": N, "status": 500, "code": "SYSTEM_ERROR", "message": "..."}
                     {"bad_signature_next": N}    answers signed over other bytes
                     {"unknown_serial_next": N}   answers signed under a serial nobody has
                     {"unsigned_next": N}         answers without Wechatpay-* headers
                     {"refund_status": "SUCCESS"} status of refunds created from now on
                     {"transactions": [{...}, ...]}  add or replace (keyed by out_trade_no;
                                                      short form: out_trade_no, total, state)
      GET  /_control  -> {"requests": n, "refunds": n, "transactions": n}

Builder: wechatpay_sim.py --make-notification --out-trade-no X [options]
    Prints {"headers": {...}, "body": "..."}: a notification encrypted with the APIv3 key
    (AEAD_AES_256_GCM) and signed with the platform key, ready to POST to
    /v1/callbacks/{channel}. See --help for the fields that can be set or broken.
"""
import argparse
import base64
import http.server
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEYS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "keys")
TOLERANCE = 300
AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
JSON_CT = "application/json"


def defaults(p):
    p.add_argument("--mchid", default="1900000109")
    p.add_argument("--appid", default="wxd678efh567hg6787")
    p.add_argument("--platform-key", default=os.path.join(KEYS, "wechat_platform1_key.pem"))
    p.add_argument("--platform-serial", default="5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
    p.add_argument("--merchant-pub", default=os.path.join(KEYS, "wechat_merchant_pub.pem"))
    p.add_argument("--merchant-serial", default="3775B6A45ACD588826D15E583A95F5DD2E3E7A0F")
    p.add_argument("--apiv3-key-file", default=os.path.join(KEYS, "wechat_apiv3_key.txt"))


def load_private(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def load_public(path):
    with open(path, "rb") as f:
        return serialization.load_pem_public_key(f.read())


def rsa_sign(key, msg: bytes) -> str:
    return base64.b64encode(key.sign(msg, padding.PKCS1v15(), hashes.SHA256())).decode()


def platform_headers(key, serial, body: bytes, timestamp=None):
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = secrets.token_hex(16).upper()
    sig = rsa_sign(key, ts.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n")
    return {"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce, "Wechatpay-Serial": serial,
            "Wechatpay-Signature": sig}


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ------------------------------------------------------------------ notification builder

def make_notification(a):
    key = load_private(a.platform_key)
    with open(a.apiv3_key_file, "rb") as f:
        apiv3 = f.read().strip()
    if len(apiv3) != 32:
        sys.exit("the APIv3 key must be 32 bytes")
    now = int(time.time())
    if a.event_type.startswith("REFUND."):
        resource = {"mchid": a.mchid, "out_trade_no": a.out_trade_no,
                    "transaction_id": a.transaction_id, "out_refund_no": a.out_refund_no,
                    "refund_id": "50" + secrets.token_hex(14)[:28].upper(),
                    "refund_status": a.event_type.split(".", 1)[1],
                    "amount": {"total": int(a.total), "refund": int(a.total),
                               "payer_total": int(a.total), "payer_refund": int(a.total)}}
        original_type = "refund"
    else:
        resource = {"mchid": a.mchid, "appid": a.appid, "out_trade_no": a.out_trade_no,
                    "transaction_id": a.transaction_id, "trade_type": "JSAPI",
                    "trade_state": a.trade_state, "trade_state_desc": a.trade_state,
                    "bank_type": "OTHERS",
                    "success_time": time.strftime("%Y-%m-%dT%H:%M:%S+08:00",
                                                  time.gmtime(now + 8 * 3600)),
                    "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
                    "amount": {"total": 0, "payer_total": 0, "currency": a.currency,
                               "payer_currency": a.currency}}
        original_type = "transaction"
    plain = dumps(resource)
    if original_type == "transaction":
        # --total is inserted verbatim so tests can send 12.5 or "100" as well as 100.
        plain = plain.replace(b'"total":0,"payer_total":0',
                              f'"total":{a.total},"payer_total":{a.total}'.encode())
    iv = a.resource_nonce or secrets.token_hex(6)
    sealed = AESGCM(apiv3).encrypt(iv.encode(), plain, a.associated_data.encode())
    body = dumps({
        "id": a.event_id or "EV-" + secrets.token_hex(10),
        "create_time": time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(now + 8 * 3600)),
        "resource_type": "encrypt-resource",
        "event_type": a.event_type,
        "summary": "支付成功" if a.event_type == "TRANSACTION.SUCCESS" else a.event_type,
        "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                     "ciphertext": base64.b64encode(sealed).decode(),
                     "associated_data": a.associated_data, "nonce": iv},
    })
    headers = platform_headers(key, a.platform_serial, body,
                               now + a.skew if a.timestamp is None else a.timestamp)
    if a.signtest:
        headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + headers["Wechatpay-Signature"]
    headers["Content-Type"] = JSON_CT
    print(json.dumps({"headers": headers, "body": body.decode()}, ensure_ascii=False))


# ------------------------------------------------------------------ server

class Sim:
    def __init__(self, a):
        self.a = a
        self.platform_key = load_private(a.platform_key)
        self.merchant_pub = load_public(a.merchant_pub)
        self.dir = a.statedir
        os.makedirs(self.dir, exist_ok=True)
        self.lock = threading.Lock()
        self.transactions = self._load("transactions.json")
        self.refunds = self._load("refunds.json")
        self.nrequests = 0
        self.fail_next = 0
        self.fail = {}
        self.bad_signature_next = 0
        self.unknown_serial_next = 0
        self.unsigned_next = 0
        self.refund_status = "PROCESSING"

    def _load(self, name):
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def _save(self, name, obj):
        tmp = os.path.join(self.dir, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(self.dir, name))

    def record(self, entry):
        with open(os.path.join(self.dir, "requests.jsonl"), "a") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.nrequests += 1

    def add_transaction(self, t):
        if "trade_state" not in t:  # the short form
            t = {"mchid": self.a.mchid, "appid": self.a.appid,
                 "out_trade_no": t["out_trade_no"],
                 "transaction_id": t.get("transaction_id",
                                         "4200" + secrets.token_hex(12)[:24].upper()),
                 "trade_type": "JSAPI", "trade_state": t.get("state", "SUCCESS"),
                 "trade_state_desc": "", "bank_type": "OTHERS",
                 "success_time": "2026-01-01T12:00:00+08:00",
                 "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
                 "amount": {"total": t.get("total", 100), "payer_total": t.get("total", 100),
                            "currency": t.get("currency", "CNY"),
                            "payer_currency": t.get("currency", "CNY")}}
        self.transactions[t["out_trade_no"]] = t

    # The merchant's request signature, checked the way WeChat Pay documents it.
    def check_auth(self, method, path, headers, body):
        auth = headers.get("authorization", "")
        if not auth.startswith(AUTH_SCHEME + " "):
            return f"Authorization does not start with {AUTH_SCHEME}"
        fields = dict(re.findall(r'(\w+)="([^"]*)"', auth[len(AUTH_SCHEME) + 1:]))
        for k in ("mchid", "nonce_str", "signature", "timestamp", "serial_no"):
            if k not in fields:
                return f"Authorization lacks {k}"
        if fields["mchid"] != self.a.mchid:
            return f"mchid {fields['mchid']} is not {self.a.mchid}"
        if fields["serial_no"] != self.a.merchant_serial:
            return f"serial_no {fields['serial_no']} is not the merchant certificate's"
        if not fields["timestamp"].isdigit() or abs(int(fields["timestamp"]) - time.time()) > TOLERANCE:
            return "timestamp outside 5 minutes"
        msg = "\n".join([method, path, fields["timestamp"], fields["nonce_str"]]).encode() + \
            b"\n" + body + b"\n"
        try:
            self.merchant_pub.verify(base64.b64decode(fields["signature"], validate=True), msg,
                                     padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return "signature does not verify with the merchant public key"
        return None

    def answer_headers(self, body):
        if self.unsigned_next > 0:
            self.unsigned_next -= 1
            return {}
        signed_body = body
        serial = self.a.platform_serial
        if self.bad_signature_next > 0:
            self.bad_signature_next -= 1
            signed_body = body + b" "
        if self.unknown_serial_next > 0:
            self.unknown_serial_next -= 1
            serial = "0123456789ABCDEF0123456789ABCDEF01234567"
        h = platform_headers(self.platform_key, self.a.platform_serial, signed_body)
        h["Wechatpay-Serial"] = serial
        return h

    def handle(self, method, path, headers, body):
        """(status, body dict, signed) for one API request."""
        auth_error = None
        if JSON_CT not in headers.get("accept", ""):
            status, obj, signed = 400, {"code": "PARAM_ERROR",
                                        "message": "Accept must be application/json"}, True
        elif not headers.get("user-agent"):
            status, obj, signed = 400, {"code": "PARAM_ERROR",
                                        "message": "User-Agent is required"}, True
        else:
            auth_error = self.check_auth(method, path, headers, body)
            if auth_error:
                status, obj, signed = 401, {"code": "SIGN_ERROR", "message": auth_error}, False
            elif self.fail_next > 0:
                self.fail_next -= 1
                st = int(self.fail.get("status", 500))
                status, obj, signed = st, {
                    "code": self.fail.get("code", "SYSTEM_ERROR" if st >= 500 else
                                          "FREQUENCY_LIMITED" if st == 429 else "INVALID_REQUEST"),
                    "message": self.fail.get("message", "injected failure")}, True
            else:
                status, obj = self.route(method, path, headers, body)
                signed = True
        return status, obj, signed, auth_error

    def route(self, method, path, headers, body):
        u = urllib.parse.urlsplit(path)
        q = urllib.parse.parse_qs(u.query)
        prefix = "/v3/pay/transactions/out-trade-no/"
        if method == "GET" and u.path.startswith(prefix):
            if q.get("mchid") != [self.a.mchid]:
                return 400, {"code": "PARAM_ERROR", "message": "mchid missing or wrong"}
            otn = urllib.parse.unquote(u.path[len(prefix):])
            t = self.transactions.get(otn)
            if t is None:
                return 404, {"code": "ORDER_NOT_EXIST", "message": "order does not exist"}
            return 200, t
        if method == "POST" and u.path == "/v3/refund/domestic/refunds":
            if JSON_CT not in headers.get("content-type", ""):
                return 400, {"code": "PARAM_ERROR", "message": "Content-Type must be JSON"}
            return self.refund(body)
        return 404, {"code": "NOT_FOUND", "message": f"no route {method} {u.path}"}

    def refund(self, body):
        try:
            r = json.loads(body)
            orn = r["out_refund_no"]
            amt = r["amount"]
            refund, total, currency = amt["refund"], amt["total"], amt["currency"]
            if not (isinstance(orn, str) and orn and type(refund) is int and type(total) is int
                    and refund > 0 and currency == "CNY"):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return 400, {"code": "PARAM_ERROR", "message": "bad refund request"}
        t = None
        if "transaction_id" in r:
            t = next((x for x in self.transactions.values()
                      if x.get("transaction_id") == r["transaction_id"]), None)
        elif "out_trade_no" in r:
            t = self.transactions.get(r["out_trade_no"])
        if t is None:
            return 404, {"code": "RESOURCE_NOT_EXISTS", "message": "order does not exist"}
        key = {"transaction_id": t["transaction_id"], "refund": refund, "total": total}
        old = self.refunds.get(orn)
        if old is not None:
            if old["_request"] != key:
                return 400, {"code": "INVALID_REQUEST",
                             "message": "out_refund_no reused with other parameters"}
            return 200, {k: v for k, v in old.items() if not k.startswith("_")}
        if t["trade_state"] not in ("SUCCESS", "REFUND"):
            return 400, {"code": "INVALID_REQUEST", "message": "transaction not paid"}
        if total != t["amount"]["total"]:
            return 400, {"code": "PARAM_ERROR", "message": "amount.total is not the order total"}
        done = sum(x["amount"]["refund"] for x in self.refunds.values()
                   if x["transaction_id"] == t["transaction_id"])
        if done + refund > total:
            return 403, {"code": "NOT_ENOUGH", "message": "refundable amount insufficient"}
        rec = {"refund_id": "50" + secrets.token_hex(14)[:28].upper(), "out_refund_no": orn,
               "transaction_id": t["transaction_id"], "out_trade_no": t["out_trade_no"],
               "channel": "ORIGINAL", "user_received_account": "balance",
               "create_time": "2026-01-01T12:00:00+08:00", "status": self.refund_status,
               "amount": {"total": total, "refund": refund, "payer_total": total,
                          "payer_refund": refund, "currency": "CNY"},
               "_request": key}
        self.refunds[orn] = rec
        t["trade_state"] = "REFUND"
        self._save("refunds.json", self.refunds)
        self._save("transactions.json", self.transactions)
        return 200, {k: v for k, v in rec.items() if not k.startswith("_")}

    def control(self, obj):
        if "fail_next" in obj:
            self.fail_next = int(obj["fail_next"])
            self.fail = {k: obj[k] for k in ("status", "code", "message") if k in obj}
        for k in ("bad_signature_next", "unknown_serial_next", "unsigned_next"):
            if k in obj:
                setattr(self, k, int(obj[k]))
        if "refund_status" in obj:
            self.refund_status = obj["refund_status"]
        for t in obj.get("transactions", []):
            self.add_transaction(t)
        if "transactions" in obj:
            self._save("transactions.json", self.transactions)


def make_handler(sim):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self):
            return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

        def _send(self, status, body: bytes, headers):
            self.send_response(status)
            self.send_header("Content-Type", JSON_CT)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Request-ID", "sim-" + secrets.token_hex(8))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _api(self, method):
            body = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            with sim.lock:
                if self.path.startswith("/_control"):
                    if method == "POST":
                        sim.control(json.loads(body or b"{}"))
                    out = dumps({"requests": sim.nrequests, "refunds": len(sim.refunds),
                                 "transactions": len(sim.transactions)})
                    self._send(200, out, {})
                    return
                status, obj, signed, auth_error = sim.handle(method, self.path, headers, body)
                out = dumps(obj)
                sim.record({"method": method, "path": self.path,
                            "headers": {k: headers.get(k) for k in (
                                "authorization", "accept", "user-agent", "content-type")},
                            "body": body.decode("utf-8", "replace"),
                            "auth_ok": auth_error is None and status != 401,
                            "auth_error": auth_error, "status": status})
                reply_headers = sim.answer_headers(out) if signed else {}
            self._send(status, out, reply_headers)

        def do_GET(self):
            self._api("GET")

        def do_POST(self):
            self._api("POST")

        def log_message(self, *args):
            pass

    return Handler


def serve(a):
    sim = Sim(a)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(sim))
    srv.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    print(f"ready {srv.server_address[1]}", flush=True)
    srv.serve_forever()
    srv.server_close()


def main():
    if "--make-notification" in sys.argv:
        p = argparse.ArgumentParser(description="build a signed, encrypted notification")
        p.add_argument("--make-notification", action="store_true")
        defaults(p)
        p.add_argument("--out-trade-no", required=True)
        p.add_argument("--transaction-id", default="4200" + secrets.token_hex(12)[:24].upper())
        p.add_argument("--total", default="100", help="inserted verbatim: 100, 12.5, \"100\"")
        p.add_argument("--currency", default="CNY")
        p.add_argument("--trade-state", default="SUCCESS")
        p.add_argument("--event-type", default="TRANSACTION.SUCCESS")
        p.add_argument("--event-id", default=None)
        p.add_argument("--out-refund-no", default="rf_" + secrets.token_hex(6))
        p.add_argument("--timestamp", type=int, default=None, help="Wechatpay-Timestamp")
        p.add_argument("--skew", type=int, default=0, help="seconds added to now")
        p.add_argument("--associated-data", default="transaction")
        p.add_argument("--resource-nonce", default=None, help="the 12-byte GCM IV")
        p.add_argument("--signtest", action="store_true", help="a WECHATPAY/SIGNTEST/ probe")
        make_notification(p.parse_args())
        return
    p = argparse.ArgumentParser(description="WeChat Pay API v3 simulator")
    p.add_argument("port", type=int)
    p.add_argument("statedir")
    defaults(p)
    serve(p.parse_args())


if __name__ == "__main__":
    main()
