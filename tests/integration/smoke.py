"""tests/integration/smoke.py: one payment through a running deployment (used by
scripts/image against the containers, usable against scripts/up too).

Environment: PAYNOTIFY_URL (receiver base URL), PAYNOTIFY_CONFIG (the config the
deployment runs with: the API key, the Stripe secret and the business webhook secret are
read from it). Creates an order whose notify_url is a local sink, posts a Stripe-signed
payment_intent.succeeded, and waits for the order to read PAID and DELIVERED with a
verified webhook."""
import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pnlib import (Sink, check, eq, request, stripe_event, stripe_sign,  # noqa: E402
                   verify_standard_webhook, wait_for)


def main():
    url = urllib.parse.urlparse(os.environ.get("PAYNOTIFY_URL", "http://127.0.0.1:8080"))
    port = url.port or 80
    cfg_path = os.environ["PAYNOTIFY_CONFIG"]
    cfg = json.load(open(cfg_path))
    shop = cfg["businesses"]["shop"]
    stripe = cfg["channels"]["stripe"]
    secret = stripe.get("webhook_secret") or open(
        os.path.join(os.path.dirname(cfg_path), stripe["webhook_secret_file"])).read().strip()
    auth = {"Authorization": "Bearer " + shop["api_keys"][0], "Content-Type": "application/json"}
    sink = Sink()
    try:
        st, _, body = request(port, "POST", "/v1/orders", json.dumps({
            "business_order_id": "smoke-" + os.urandom(6).hex(), "amount": 990,
            "currency": "USD", "channel": "stripe", "subject": "smoke test",
            "notify_url": sink.url}), auth)
        eq(st, 201, f"create order ({body!r})")
        oid = json.loads(body)["order_id"]
        event = stripe_event(oid, 990, "usd")
        st, _, body = request(port, "POST", "/v1/callbacks/stripe", event,
                              {"Stripe-Signature": stripe_sign(secret, event)})
        eq(st, 200, f"callback ({body!r})")
        req = wait_for(lambda: sink.received(), 60, "the webhook")[0]
        hook = verify_standard_webhook(shop["webhook_secret"], req)
        eq(hook["data"]["order_id"], oid, "webhook order")

        def order():
            return json.loads(request(port, "GET", f"/v1/orders/{oid}", None, auth)[2])
        wait_for(lambda: order()["notify_status"] == "DELIVERED", 30, "DELIVERED")
        check(order()["status"] == "PAID", "order PAID")
        print(f"smoke: order {oid} PAID and its webhook delivered and verified")
    finally:
        sink.close()


if __name__ == "__main__":
    main()
