#!/usr/bin/env python3
"""tests/fakes/stripe_callback.py ORDER_ID AMOUNT CURRENCY [SECRET_FILE] [URL]: prints a curl
command that posts a payment_intent.succeeded event for ORDER_ID, signed exactly as Stripe
signs webhooks (HMAC-SHA256 over "t.body" keyed with the whole whsec_ secret)."""
import hashlib
import hmac
import json
import os
import secrets
import shlex
import sys
import time

order_id, amount, currency = sys.argv[1], int(sys.argv[2]), sys.argv[3]
here = os.path.dirname(os.path.abspath(__file__))
secret_file = sys.argv[4] if len(sys.argv) > 4 else os.path.join(
    here, "..", "..", "config", "keys", "stripe_whsec.txt")
url = sys.argv[5] if len(sys.argv) > 5 else "http://127.0.0.1:8080/v1/callbacks/stripe"
secret = open(secret_file).read().strip()
body = json.dumps({"id": "evt_" + secrets.token_hex(8), "object": "event",
                   "type": "payment_intent.succeeded",
                   "data": {"object": {"id": "pi_" + secrets.token_hex(8), "amount": amount,
                                       "amount_received": amount, "currency": currency,
                                       "metadata": {"order_id": order_id}}}},
                  separators=(",", ":"))
t = int(time.time())
sig = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
print(f"curl -s -i -X POST {shlex.quote(url)} -H {shlex.quote(f'Stripe-Signature: t={t},v1={sig}')}"
      f" -H 'Content-Type: application/json' --data-binary {shlex.quote(body)}")
