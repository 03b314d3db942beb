"""A real HTTP mail API for the mail tests: each POST body (JSON) is written to OUT_DIR as
one .json file together with its Idempotency-Key header. OUT_DIR/mode is read per request:
"ok" (202), a status code such as "500" or "400", or "stall" (30 s, then 503, nothing kept).

Usage: http_sink.py PORT OUT_DIR   (prints "ready" once listening)
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = None
COUNT = [0]


def mode():
    try:
        with open(os.path.join(OUT, "mode")) as f:
            return f.read().strip() or "ok"
    except OSError:
        return "ok"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        m = mode()
        if m == "stall":
            time.sleep(30)
            m = "503"
        if m != "ok":
            self.send_response(int(m))
            self.end_headers()
            self.wfile.write(b"injected fault")
            return
        COUNT[0] += 1
        record = {
            "idempotency_key": self.headers.get("Idempotency-Key"),
            "content_type": self.headers.get("Content-Type"),
            "path": self.path,
            "body": json.loads(body),
        }
        name = os.path.join(OUT, f"{time.time_ns()}-{COUNT[0]}.json")
        with open(name + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(name + ".tmp", name)
        self.send_response(202)
        self.end_headers()


def main():
    global OUT
    port, OUT = int(sys.argv[1]), sys.argv[2]
    os.makedirs(OUT, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
