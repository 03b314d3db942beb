"""A real SMTP server for the mail tests (aiosmtpd): every accepted message is written to
OUT_DIR as one .eml file. The behaviour is read from OUT_DIR/mode before each message, so a
test can inject faults while the server runs:

  ok      accept (250)
  4xx     answer DATA with that transient code (e.g. 451)
  5xx     answer DATA with that permanent code (e.g. 550)
  stall   wait 30 s before answering 451 (longer than any test's timeout); nothing is kept

Usage: smtp_sink.py PORT OUT_DIR   (prints "ready" once listening)
"""
import asyncio
import os
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out):
        self.out = out
        self.count = 0

    def mode(self):
        try:
            with open(os.path.join(self.out, "mode")) as f:
                return f.read().strip() or "ok"
        except OSError:
            return "ok"

    async def handle_DATA(self, server, session, envelope):
        mode = self.mode()
        if mode == "stall":
            await asyncio.sleep(30)
            return "451 stalled"
        if mode[:1] in ("4", "5"):
            return f"{mode} injected fault"
        self.count += 1
        name = f"{time.time_ns()}-{self.count}.eml"
        tmp = os.path.join(self.out, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.out, name))
        return "250 OK"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
