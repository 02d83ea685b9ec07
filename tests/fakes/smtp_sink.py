#!/usr/bin/python3
"""tests/fakes/smtp_sink.py PORT OUTDIR: a real SMTP server for tests (Debian's
python3-aiosmtpd). Accepts every message and saves it as OUTDIR/msg-NNNNNN.eml:

    MAIL FROM: <envelope sender>
    RCPT TO: <recipient>          (one line per recipient)
    <empty line>
    <the message exactly as received: headers and body, CRLF line ends>

Each file is written to a temporary name and renamed, so a reader never sees half a message.
Listens on 127.0.0.1:PORT, prints "ready" on stdout once listening, exits 0 on SIGTERM.
"""
import os
import signal
import sys
import threading

try:
    from aiosmtpd.controller import Controller
except ImportError:
    # Debian's python3-aiosmtpd (pure Python) lives in /usr/lib/python3/dist-packages, which an
    # interpreter from elsewhere (pyenv, a venv) does not search.
    sys.path.append("/usr/lib/python3/dist-packages")
    from aiosmtpd.controller import Controller


class Saver:
    def __init__(self, outdir):
        self.outdir = outdir
        self.lock = threading.Lock()
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
            n = self.n
        head = f"MAIL FROM: {envelope.mail_from}\r\n"
        head += "".join(f"RCPT TO: {r}\r\n" for r in envelope.rcpt_tos)
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        path = os.path.join(self.outdir, f"msg-{n:06d}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(head.encode() + b"\r\n" + content)
        os.rename(path + ".tmp", path)
        return "250 OK message saved"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: smtp_sink.py PORT OUTDIR")
    port, outdir = int(sys.argv[1]), sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    controller = Controller(Saver(outdir), hostname="127.0.0.1", port=port)
    controller.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print("ready", flush=True)
    while not done.wait(0.5):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
