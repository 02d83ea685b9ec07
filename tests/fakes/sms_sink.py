#!/usr/bin/python3
"""tests/fakes/sms_sink.py PORT OUTFILE [--fail-first N]: a real HTTP SMS gateway for tests.

Answers every POST (any path) whose body is JSON with 200 and appends that body to OUTFILE as
one JSON line (re-serialised compactly, so each message is exactly one line), flushed at once.
With --fail-first N the first N POSTs are answered 503 and not recorded (they are logged to
stderr), as a gateway that is down for a while. A body that is not JSON gets 400, unrecorded.
Listens on 127.0.0.1:PORT, prints "ready" on stdout once listening, exits 0 on SIGTERM.
"""
import argparse
import http.server
import json
import signal
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("outfile")
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args()

    lock = threading.Lock()
    state = {"seen": 0}
    out = open(args.outfile, "a", encoding="utf-8")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, body):
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state["seen"] += 1
                n = state["seen"]
                if n <= args.fail_first:
                    print(f"sms_sink: failing request {n}: {body!r}", file=sys.stderr, flush=True)
                    self.reply(503, {"error": "failing on purpose", "request": n})
                    return
                try:
                    msg = json.loads(body)
                except ValueError:
                    self.reply(400, {"error": "body is not JSON"})
                    return
                out.write(json.dumps(msg, ensure_ascii=False, separators=(",", ":")) + "\n")
                out.flush()
            self.reply(200, {"status": "queued", "request": n})

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def on_term(*_):
        # serve_forever() runs on this thread: shutdown() must come from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready", flush=True)
    server.serve_forever()
    server.server_close()
    out.close()


if __name__ == "__main__":
    main()
