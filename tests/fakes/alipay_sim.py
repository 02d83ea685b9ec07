#!/usr/bin/env python3
"""tests/fakes/alipay_sim.py PORT STATEDIR [options]: a stand-in for the Alipay open API
gateway (https://openapi.alipay.com/gateway.do) on 127.0.0.1:PORT, for tests.

It is a real HTTP server and checks requests the way the gateway does, with code of its
own (Python, python3-cryptography), independent of channel/alipay.c:
  - POST form (body and/or query string), public parameters app_id, method, format=JSON,
    charset=utf-8, sign_type=RSA2, timestamp ("yyyy-MM-dd HH:mm:ss", Asia/Shanghai,
    within 15 minutes), version=1.0, biz_content (JSON), sign;
  - sign: RSA2 (SHA256withRSA) with the APP PUBLIC key over every other non-empty
    parameter (sign_type included), sorted by key, "k=v" joined by "&".
It answers alipay.trade.query and alipay.trade.refund with
{"<method>_response": {...}, "sign": "..."} signed with the ALIPAY PRIVATE key over the
exact text of the response value. Refunds are idempotent per (trade, out_request_no):
a repeat answers fund_change "N" and moves no money; a repeat with a different amount
is refused (ACQ.DISCORDANT_REPEAT_REQUEST).

STATEDIR gets requests.jsonl (one JSON object per request: decoded params, whether the
signature verified, what was answered) and state.json (trades and refunds), rewritten
after every change; a restarted simulator on the same STATEDIR keeps its trades and
refunds.

Control (JSON in, JSON out), for tests:
  POST /_control {"trade": {"out_trade_no", "total_amount" (yuan), "trade_status"
                  (default TRADE_SUCCESS), "trade_no" (default generated)}}
                 {"fail_next": N, "status": 503}         N answers with that HTTP status
                 {"fail_next": N, "code": "20000", "sub_code": "isp.unknown-error"}
                                  N signed business errors in place of the real answer,
                                  given after the work was done (a refund did happen)
                 {"fail_next": N, "status": 503, "after_apply": true}
                                                          do the work, then fail (lost reply)
                 {"bad_sign_next": N}    N answers signed with a key Alipay does not hold
                 {"unsigned_next": N}    N answers without "sign"
                 {"delay_next": N, "seconds": S}
                 {"reset": true}         forget trades, refunds and pending failures
  GET /_state    {"trades": {...}, "refunds": [...], "requests": count}

Prints "ready" on stdout once listening; SIGTERM stops it (exit 0)."""
import argparse
import base64
import datetime
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = os.path.join(HERE, "..", "data", "keys")
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))
AMOUNT_RE = re.compile(r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$")
PUBLIC_PARAMS = ("app_id", "method", "format", "charset", "sign_type", "timestamp",
                 "version", "biz_content", "sign")


def yuan_to_fen(s):
    """Exact: "12.5" -> 1250; None if malformed."""
    if not isinstance(s, str) or not AMOUNT_RE.match(s):
        return None
    whole, _, frac = s.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def fen_to_yuan(f):
    return "%d.%02d" % (f // 100, f % 100)


def now_shanghai():
    return datetime.datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


class Sim:
    def __init__(self, statedir, app_id, app_pub, ali_priv):
        self.statedir = statedir
        self.app_id = app_id
        self.app_pub = app_pub
        self.ali_priv = ali_priv
        # Signs "bad" answers: a real RSA2 signature from a key Alipay's public key rejects.
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.lock = threading.Lock()
        self.trades = {}   # out_trade_no -> trade
        self.refunds = []  # in order
        self.fail = []     # pending failure injections, consumed in order
        self.bad_sign = 0
        self.unsigned = 0
        self.delay = (0, 0.0)
        self.nreq = 0
        os.makedirs(statedir, exist_ok=True)
        path = os.path.join(statedir, "state.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                st = json.load(f)
            self.trades = st.get("trades", {})
            self.refunds = st.get("refunds", [])

    # ---- persistence and records
    def save(self):
        path = os.path.join(self.statedir, "state.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"trades": self.trades, "refunds": self.refunds}, f, ensure_ascii=False,
                      indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def record(self, rec):
        self.nreq += 1
        with open(os.path.join(self.statedir, "requests.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    # ---- signatures
    def verify_request(self, params):
        content = "&".join("%s=%s" % (k, params[k]) for k in sorted(params)
                           if k != "sign" and params[k] != "")
        try:
            sig = base64.b64decode(params.get("sign", ""), validate=True)
            self.app_pub.verify(sig, content.encode("utf-8"), padding.PKCS1v15(),
                                hashes.SHA256())
            return True
        except (InvalidSignature, ValueError):
            return False

    def signed_body(self, key, resp, how):
        """The answer: the response object's text exactly as signed, then sign."""
        raw = json.dumps(resp, ensure_ascii=False, separators=(",", ":"))
        if how == "unsigned":
            return '{"%s":%s}' % (key, raw)
        signer = self.stranger if how == "bad" else self.ali_priv
        sig = signer.sign(raw.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return '{"%s":%s,"sign":"%s"}' % (key, raw, base64.b64encode(sig).decode())

    # ---- the gateway
    def handle_gateway(self, params):
        """Returns (response key, response object, effects already applied)."""
        method = params.get("method", "")
        rkey = method.replace(".", "_") + "_response" if method else "error_response"

        def err(code, msg, sub_code, sub_msg, key=rkey):
            return key, {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}

        for p in PUBLIC_PARAMS:
            if not params.get(p):
                return err("40001", "Missing Required Arguments", "isv.missing-" +
                           p.replace("_", "-"), "缺少必选参数 " + p)
        if params["app_id"] != self.app_id:
            return err("40002", "Invalid Arguments", "isv.invalid-app-id", "无效的AppID参数")
        if params["sign_type"] != "RSA2":
            return err("40002", "Invalid Arguments", "isv.invalid-signature-type",
                       "无效的签名类型")
        if not self.verify_request(params):
            return err("40002", "Invalid Arguments", "isv.invalid-signature", "验签出错")
        if params["format"] != "JSON" or params["charset"].lower() != "utf-8" \
                or params["version"] != "1.0":
            return err("40002", "Invalid Arguments", "isv.invalid-parameter",
                       "format/charset/version")
        try:
            ts = datetime.datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S")
            ts = ts.replace(tzinfo=SHANGHAI)
            if abs((datetime.datetime.now(SHANGHAI) - ts).total_seconds()) > 900:
                raise ValueError("skew")
        except ValueError:
            return err("40002", "Invalid Arguments", "isv.invalid-timestamp",
                       "非法的时间戳参数")
        try:
            biz = json.loads(params["biz_content"])
            if not isinstance(biz, dict):
                raise ValueError("not an object")
        except ValueError:
            return err("40002", "Invalid Arguments", "isv.invalid-biz-content",
                       "biz_content 不是 JSON 对象")
        if method == "alipay.trade.query":
            return self.query(rkey, biz, err)
        if method == "alipay.trade.refund":
            return self.refund(rkey, biz, err)
        return err("40002", "Invalid Arguments", "isv.invalid-method", "不存在的方法名",
                   key="error_response")

    def find_trade(self, biz):
        t = self.trades.get(biz.get("out_trade_no") or "")
        if t is None and biz.get("trade_no"):
            t = next((x for x in self.trades.values() if x["trade_no"] == biz["trade_no"]),
                     None)
        if t is not None and biz.get("trade_no") and t["trade_no"] != biz["trade_no"]:
            return None
        return t

    def query(self, rkey, biz, err):
        t = self.find_trade(biz)
        if t is None:
            return err("40004", "Business Failed", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        resp = {"code": "10000", "msg": "Success", "buyer_logon_id": "158****1562",
                "buyer_pay_amount": t["total_amount"], "buyer_user_id": "2088102177846875",
                "invoice_amount": t["total_amount"], "out_trade_no": t["out_trade_no"],
                "point_amount": "0.00", "receipt_amount": t["total_amount"],
                "store_name": "门店/一号", "total_amount": t["total_amount"],
                "trade_no": t["trade_no"], "trade_status": t["trade_status"]}
        if t.get("send_pay_date"):
            resp["send_pay_date"] = t["send_pay_date"]
            resp["fund_bill_list"] = [{"amount": t["total_amount"],
                                       "fund_channel": "ALIPAYACCOUNT"}]
        return rkey, resp

    def refund(self, rkey, biz, err):
        t = self.find_trade(biz)
        if t is None:
            return err("40004", "Business Failed", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        amount = yuan_to_fen(biz.get("refund_amount"))
        if amount is None or amount <= 0:
            return err("40002", "Invalid Arguments", "isv.invalid-parameter",
                       "refund_amount 格式错误")
        req_no = biz.get("out_request_no") or t["out_trade_no"]
        total = yuan_to_fen(t["total_amount"])
        done = [r for r in self.refunds
                if r["trade_no"] == t["trade_no"] and r["out_request_no"] == req_no]
        fund_change = "Y"
        if done:
            if done[0]["refund_amount"] != fen_to_yuan(amount):
                return err("40004", "Business Failed", "ACQ.DISCORDANT_REPEAT_REQUEST",
                           "请求信息不一致")
            fund_change = "N"  # the same request again: no money moves
        else:
            if t["trade_status"] != "TRADE_SUCCESS" and not (
                    t["trade_status"] == "TRADE_CLOSED" and t.get("refunded_fen", 0) > 0):
                return err("40004", "Business Failed", "ACQ.TRADE_STATUS_ERROR",
                           "交易状态不合法")
            if amount > total - t.get("refunded_fen", 0):
                return err("40004", "Business Failed", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
                           "退款金额超限")
            t["refunded_fen"] = t.get("refunded_fen", 0) + amount
            if t["refunded_fen"] == total:
                t["trade_status"] = "TRADE_CLOSED"
            self.refunds.append({"out_trade_no": t["out_trade_no"], "trade_no": t["trade_no"],
                                 "out_request_no": req_no,
                                 "refund_amount": fen_to_yuan(amount),
                                 "refund_reason": biz.get("refund_reason", ""),
                                 "gmt_refund_pay": now_shanghai()})
            self.save()
        return rkey, {"code": "10000", "msg": "Success", "buyer_logon_id": "158****1562",
                      "fund_change": fund_change, "out_trade_no": t["out_trade_no"],
                      "refund_fee": fen_to_yuan(t.get("refunded_fen", 0)),
                      "send_back_fee": fen_to_yuan(amount), "trade_no": t["trade_no"],
                      "gmt_refund_pay": now_shanghai()}

    # ---- control
    def control(self, cmd):
        if cmd.get("reset"):
            self.trades, self.refunds, self.fail = {}, [], []
            self.bad_sign = self.unsigned = 0
            self.delay = (0, 0.0)
            self.save()
        if "trade" in cmd:
            t = dict(cmd["trade"])
            if yuan_to_fen(t.get("total_amount")) is None or not t.get("out_trade_no"):
                raise ValueError("trade needs out_trade_no and total_amount (yuan)")
            t.setdefault("trade_status", "TRADE_SUCCESS")
            t.setdefault("trade_no", time.strftime("%Y%m%d") + "2200" + secrets.token_hex(8))
            if t["trade_status"] in ("TRADE_SUCCESS", "TRADE_FINISHED"):
                t.setdefault("send_pay_date", now_shanghai())
            t["refunded_fen"] = 0
            self.trades[t["out_trade_no"]] = t
            self.save()
        if cmd.get("fail_next"):
            for _ in range(int(cmd["fail_next"])):
                self.fail.append({"status": int(cmd.get("status", 200)),
                                  "code": cmd.get("code", "20000"),
                                  "sub_code": cmd.get("sub_code", "isp.unknown-error"),
                                  "after_apply": bool(cmd.get("after_apply", False))})
        if cmd.get("bad_sign_next"):
            self.bad_sign += int(cmd["bad_sign_next"])
        if cmd.get("unsigned_next"):
            self.unsigned += int(cmd["unsigned_next"])
        if cmd.get("delay_next"):
            self.delay = (int(cmd["delay_next"]), float(cmd.get("seconds", 1)))
        return {"ok": True, "trades": self.trades}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sim = None  # set in main()

    def log_message(self, fmt, *args):  # requests.jsonl is the record; keep stderr quiet
        pass

    def reply(self, status, body, ctype="application/json;charset=utf-8"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        sim = self.sim
        if self.path == "/_state":
            with sim.lock:
                body = json.dumps({"trades": sim.trades, "refunds": sim.refunds,
                                   "requests": sim.nreq}, ensure_ascii=False)
            return self.reply(200, body)
        self.reply(404, '{"error":"not found"}')

    def do_POST(self):
        sim = self.sim
        raw = self.read_body()
        if self.path == "/_control":
            try:
                cmd = json.loads(raw or b"{}")
                with sim.lock:
                    out = sim.control(cmd)
                return self.reply(200, json.dumps(out, ensure_ascii=False))
            except (ValueError, TypeError, AttributeError) as ex:
                return self.reply(400, json.dumps({"error": str(ex)}))
        rec = {"ts": time.time(), "path": self.path,
               "content_type": self.headers.get("Content-Type", ""),
               "body": raw.decode("utf-8", "replace")}
        try:
            pairs = urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query,
                                           keep_blank_values=True, strict_parsing=False,
                                           encoding="utf-8", errors="strict")
            pairs += urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                                            strict_parsing=True, encoding="utf-8",
                                            errors="strict")
        except (UnicodeDecodeError, ValueError) as ex:
            rec.update(http_status=400, error="undecodable form: %s" % ex)
            with sim.lock:
                sim.record(rec)
            return self.reply(400, "bad form", "text/plain")
        params = {}
        for k, v in pairs:
            if k in params:
                rec.update(http_status=400, error="duplicate parameter " + k)
                with sim.lock:
                    sim.record(rec)
                return self.reply(400, "duplicate parameter", "text/plain")
            params[k] = v
        rec["params"] = params
        with sim.lock:
            fail = sim.fail.pop(0) if sim.fail else None
            delay = 0.0
            if sim.delay[0] > 0:
                delay = sim.delay[1]
                sim.delay = (sim.delay[0] - 1, sim.delay[1])
            how = "good"
            if sim.bad_sign > 0:
                sim.bad_sign -= 1
                how = "bad"
            elif sim.unsigned > 0:
                sim.unsigned -= 1
                how = "unsigned"
            rec["sign_ok"] = sim.verify_request(params)
            if fail is not None and fail["status"] != 200 and not fail["after_apply"]:
                rec.update(http_status=fail["status"], injected="http")
                sim.record(rec)
                key = resp = None
            else:
                key, resp = sim.handle_gateway(params)
                if fail is not None and fail["status"] == 200:
                    # A business-level system error instead of the real answer.
                    resp = {"code": fail["code"], "msg": "Service Currently Unavailable",
                            "sub_code": fail["sub_code"], "sub_msg": "系统繁忙"}
                    rec["injected"] = "code"
                rec.update(http_status=fail["status"] if fail else 200, answer=resp,
                           signed=how)
                if fail is not None and fail["after_apply"]:
                    rec["injected"] = "http_after_apply"
                sim.record(rec)
        if delay:
            time.sleep(delay)
        if resp is None or (fail is not None and fail["after_apply"]):
            return self.reply(fail["status"], "<html>Service Unavailable</html>",
                              "text/html")
        self.reply(200, sim.signed_body(key, resp, how))


def load_pem(path, private):
    with open(path, "rb") as f:
        data = f.read()
    if private:
        return serialization.load_pem_private_key(data, password=None)
    return serialization.load_pem_public_key(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("statedir")
    ap.add_argument("--app-id", default="2021000000000001")
    ap.add_argument("--app-public-key", default=os.path.join(KEYS, "alipay_app_public_key.pem"))
    ap.add_argument("--alipay-private-key", default=os.path.join(KEYS, "alipay_private_key.pem"))
    a = ap.parse_args()
    Handler.sim = Sim(a.statedir, a.app_id, load_pem(a.app_public_key, False),
                      load_pem(a.alipay_private_key, True))
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()


if __name__ == "__main__":
    sys.exit(main())
