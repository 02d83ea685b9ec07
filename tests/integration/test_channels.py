"""tests/integration/test_channels.py: Alipay and WeChat Pay notifications end to end
through the receiver and a worker (issue 6), signed by independent Python code with the
test keys in tests/data/keys, and the automatic refund going to each provider's simulator."""
import base64
import datetime
import json
import os
import secrets
import subprocess
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from pnlib import PYTHON, SOURCE, Env, FakeProcess, Sink, check, eq, request, run, wait_for

KEYS = os.path.join(SOURCE, "tests/data/keys")


def load_key(name):
    with open(os.path.join(KEYS, name), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


# ---------------------------------------------------------------- Alipay

ALIPAY_APP_ID = "2021000000000001"


def alipay_notification(order_id, yuan, trade_no, status="TRADE_SUCCESS", key="alipay_private_key.pem",
                        app_id=ALIPAY_APP_ID):
    params = {"notify_id": "nt_" + secrets.token_hex(8), "notify_type": "trade_status_sync",
              "notify_time": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
              "charset": "utf-8", "version": "1.0", "app_id": app_id, "out_trade_no": order_id,
              "trade_no": trade_no, "trade_status": status, "total_amount": yuan,
              "subject": "integration test", "gmt_payment": "2026-11-24 12:00:00"}
    content = "&".join(f"{k}={params[k]}" for k in sorted(params) if params[k])
    sig = load_key(key).sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())
    params["sign"] = base64.b64encode(sig).decode()
    params["sign_type"] = "RSA2"
    return urllib.parse.urlencode(params).encode()


def alipay_world(name):
    sim_dir = os.path.join(Env(name + "-sim").dir, "alipay-sim")
    sim = FakeProcess("alipay_sim.py", sim_dir, "--app-id", ALIPAY_APP_ID,
                      "--app-public-key", os.path.join(KEYS, "alipay_app_public_key.pem"),
                      "--alipay-private-key", os.path.join(KEYS, "alipay_private_key.pem"))
    env = Env(name, {"PAYNOTIFY_SWEEP_INTERVAL": "1s"}, extra_channels={"alipay": {
        "type": "alipay", "app_id": ALIPAY_APP_ID,
        "alipay_public_key_file": os.path.join(KEYS, "alipay_public_key.txt"),
        "app_private_key_file": os.path.join(KEYS, "alipay_app_private_key.pem"),
        "api_url": f"http://127.0.0.1:{sim.port}/gateway.do"}})
    return env, sim, sim_dir


def post_alipay(env, body):
    return request(env.port, "POST", "/v1/callbacks/alipay", body,
                   {"Content-Type": "application/x-www-form-urlencoded"})


def test_alipay_payment_once():
    env, sim, _ = alipay_world("alipay-pay")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        o = env.create_order(sink.url, amount=1250, currency="CNY", channel="alipay")
        trade_no = "20261124220014" + secrets.token_hex(7)
        body = alipay_notification(o["order_id"], "12.50", trade_no)
        for _ in range(3):
            st, hdr, reply = post_alipay(env, body)
            eq((st, reply), (200, b"success"), "Alipay's exact success reply")
        wait_for(lambda: env.get_order(o["order_id"])["notify_status"] == "DELIVERED", 30,
                 "delivery")
        got = env.get_order(o["order_id"])
        eq(got["status"], "PAID", "order")
        eq(got["provider_txn_id"], trade_no, "trade_no recorded")
        time.sleep(1)
        eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{o['order_id']}'"),
           "1", "payment_log rows for 3 copies")
        eq(len(sink.received()), 1, "webhooks")
        # forged (another key), tampered amount, wrong app_id: failure, nothing applied
        for name, bad in (
                ("forged", alipay_notification(o["order_id"], "12.50", "x1",
                                               key="alipay_other_key.pem")),
                ("tampered", body.replace(b"12.50", b"0.01")),
                ("other app", alipay_notification(o["order_id"], "12.50", "x2",
                                                  app_id="2021000000000999"))):
            st, _, reply = post_alipay(env, bad)
            eq((st, reply), (400, b"failure"), f"{name} notification")
    finally:
        env.close()
        sink.close()
        sim.close()


def test_alipay_paid_after_close_refunded_by_the_gateway():
    env, sim, sim_dir = alipay_world("alipay-refund")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        soon = (datetime.datetime.now(datetime.timezone.utc)
                + datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        o = env.create_order(sink.url, amount=990, currency="CNY", channel="alipay",
                             expire_at=soon)
        oid = o["order_id"]
        wait_for(lambda: env.get_order(oid)["status"] == "CLOSED", 20, "closed")
        trade_no = "20261124220014" + secrets.token_hex(7)
        request(sim.port, "POST", "/_control", json.dumps(
            {"trade": {"out_trade_no": oid, "total_amount": "9.90", "trade_no": trade_no}}))
        eq(post_alipay(env, alipay_notification(oid, "9.90", trade_no))[0], 200, "acked")
        wait_for(lambda: env.scalar(f"SELECT status FROM refunds WHERE order_id='{oid}'")
                 == "SUCCEEDED", 40, "refund SUCCEEDED at the Alipay simulator")
        refund_id = env.scalar(f"SELECT refund_id FROM refunds WHERE order_id='{oid}'")
        state = json.loads(request(sim.port, "GET", "/_state")[2])
        refunds = [r for r in state["refunds"] if r.get("out_request_no") == refund_id]
        eq(len(refunds), 1, "one refund at the gateway, keyed by out_request_no")
        eq(env.get_order(oid)["status"], "CLOSED", "order stays CLOSED")
    finally:
        env.close()
        sink.close()
        sim.close()


# ---------------------------------------------------------------- WeChat Pay

WX_MCHID, WX_APPID = "1900000109", "wxd678efh567hg6787"
WX_SERIAL1 = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
WX_SERIAL2 = "PUB_KEY_ID_0114000000000000000000000000000002"


def wechat_notification(order_id, total, txn, *extra):
    """Built (AES-256-GCM + platform RSA signature) by the simulator's own Python code."""
    out = subprocess.run([PYTHON, os.path.join(SOURCE, "tests/fakes/wechatpay_sim.py"),
                          "--make-notification", "--out-trade-no", order_id, "--total",
                          str(total), "--transaction-id", txn, *extra],
                         check=True, capture_output=True, text=True).stdout
    n = json.loads(out)
    return n["headers"], n["body"].encode()


def wechat_world(name):
    sim_dir = os.path.join(Env(name + "-sim").dir, "wechat-sim")
    sim = FakeProcess("wechatpay_sim.py", sim_dir)
    env = Env(name, {"PAYNOTIFY_SWEEP_INTERVAL": "1s"}, extra_channels={"wx": {
        "type": "wechatpay", "mchid": WX_MCHID, "appid": WX_APPID,
        "apiv3_key_file": os.path.join(KEYS, "wechat_apiv3_key.txt"),
        "platform_certs": [
            {"serial": WX_SERIAL1, "file": os.path.join(KEYS, "wechat_platform1_cert.pem")},
            {"serial": WX_SERIAL2, "file": os.path.join(KEYS, "wechat_platform2_pub.pem")}],
        "merchant_serial": "3775B6A45ACD588826D15E583A95F5DD2E3E7A0F",
        "merchant_key_file": os.path.join(KEYS, "wechat_merchant_key.pem"),
        "api_url": f"http://127.0.0.1:{sim.port}"}})
    sim.dir = sim_dir
    return env, sim


def post_wechat(env, headers, body):
    return request(env.port, "POST", "/v1/callbacks/wx", body,
                   dict(headers, **{"Content-Type": "application/json"}))


def test_wechatpay_payment_once():
    env, sim = wechat_world("wechat-pay")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        o = env.create_order(sink.url, amount=1250, currency="CNY", channel="wx")
        txn = "4200" + secrets.token_hex(12)
        headers, body = wechat_notification(o["order_id"], 1250, txn)
        for _ in range(3):
            st, _, reply = post_wechat(env, headers, body)
            eq((st, reply), (204, b""), "WeChat Pay's 204 with no body")
        wait_for(lambda: env.get_order(o["order_id"])["notify_status"] == "DELIVERED", 30,
                 "delivery")
        eq(env.get_order(o["order_id"])["provider_txn_id"], txn, "transaction_id recorded")
        time.sleep(1)
        eq(env.scalar(f"SELECT COUNT(*) FROM payment_log WHERE order_id='{o['order_id']}'"),
           "1", "payment_log rows for 3 copies")
        # rotated platform key verifies too (a second order)
        o2 = env.create_order(sink.url, amount=300, currency="CNY", channel="wx")
        h2, b2 = wechat_notification(o2["order_id"], 300, txn + "2", "--platform-key",
                                     os.path.join(KEYS, "wechat_platform2_key.pem"),
                                     "--platform-serial", WX_SERIAL2)
        eq(post_wechat(env, h2, b2)[0], 204, "notification signed with the rotated key")
        wait_for(lambda: env.get_order(o2["order_id"])["status"] == "PAID", 30, "paid")
        # probe, stale, tampered: 4xx with {"code":"FAIL"}, nothing applied
        for name, (h, b) in (
                ("signature probe", wechat_notification(o["order_id"], 1250, txn, "--signtest")),
                ("stale", wechat_notification(o["order_id"], 1250, txn, "--skew", "-400")),
                ("tampered", (headers, body.replace(b'"ciphertext":"', b'"ciphertext":"A')))):
            st, _, reply = post_wechat(env, h, b)
            check(400 <= st < 500, f"{name}: status {st}")
            eq(json.loads(reply)["code"], "FAIL", f"{name}: reply code")
    finally:
        env.close()
        sink.close()
        sim.close()


def test_wechatpay_duplicate_payment_refunded_by_the_gateway():
    env, sim = wechat_world("wechat-refund")
    sink = Sink()
    try:
        env.start("paynotify-receiver")
        env.start("paynotify-worker")
        o = env.create_order(sink.url, amount=800, currency="CNY", channel="wx")
        oid = o["order_id"]
        first, second = "4200" + secrets.token_hex(12), "4200" + secrets.token_hex(12)
        eq(post_wechat(env, *wechat_notification(oid, 800, first))[0], 204, "first payment")
        wait_for(lambda: env.get_order(oid)["status"] == "PAID", 30, "paid")
        request(sim.port, "POST", "/_control", json.dumps({"transactions": [
            {"out_trade_no": oid, "transaction_id": second, "total": 800, "state": "SUCCESS"}]}))
        eq(post_wechat(env, *wechat_notification(oid, 800, second))[0], 204, "second payment")
        wait_for(lambda: env.scalar(f"SELECT status FROM refunds WHERE order_id='{oid}'")
                 == "SUCCEEDED", 40, "refund SUCCEEDED at the WeChat Pay simulator")
        refund_id = env.scalar(f"SELECT refund_id FROM refunds WHERE order_id='{oid}'")
        with open(os.path.join(sim.dir, "refunds.json")) as f:
            refunds = json.load(f)
        eq(list(refunds), [refund_id], "one refund at the gateway, keyed by out_refund_no")
        eq(env.get_order(oid)["provider_txn_id"], first, "order stays paid by the first")
    finally:
        env.close()
        sink.close()
        sim.close()


if __name__ == "__main__":
    run([test_alipay_payment_once, test_alipay_paid_after_close_refunded_by_the_gateway,
         test_wechatpay_payment_once, test_wechatpay_duplicate_payment_refunded_by_the_gateway])
