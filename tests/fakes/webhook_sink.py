#!/usr/bin/env python3
"""tests/fakes/webhook_sink.py PORT [SECRET]: a business notify endpoint for trying paynotify
by hand. Prints every webhook it receives; with the business's whsec_ secret it also checks
the Standard Webhooks signature. Answers 200."""
import base64
import hashlib
import hmac
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        verdict = ""
        if len(sys.argv) > 2:
            key = base64.b64decode(sys.argv[2][len("whsec_"):])
            msg = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode() + body
            want = "v1," + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()
            verdict = " signature OK" if want in self.headers.get("webhook-signature", "").split() \
                else " signature BAD"
        print(f"{self.path} webhook-id={self.headers['webhook-id']}{verdict}\n{body.decode()}",
              flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
