"""Stand-in LangSmith upstream for the soak (python3 standard library only).

Routes (TOKEN is any path segment):
  GET  /api/v1/public/TOKEN/run          small JSON with an absolute share URL
  POST /api/v1/public/TOKEN/runs/query   JSON echo of the body size, or, with
                                         Accept: text/event-stream, an SSE
                                         stream of SSE_EVENTS events
  GET  /api/v1/public/TOKEN/large        LARGE_MIB MiB of JSON lines, each
                                         naming the public origin
  anything else                          small JSON

Every request is appended to the log file (method, path, X-Forwarded-For)
before it is answered, so the record survives restarts and the driver can
check that no refused request ever arrived.

Usage: upstream.py PORT LOGFILE LARGE_MIB
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUBLIC = "https://smith.example.com"
SSE_EVENTS = 20
LINE = ('{"url": "' + PUBLIC + '/public/6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d/r",'
        ' "pad": "' + "x" * 40 + '"}\n').encode()


def large_body(mib):
    n = (mib * 1024 * 1024) // len(LINE)
    return LINE * n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "soak-upstream"

    def log_message(self, *args):
        pass

    def record(self):
        with self.server.log_lock:
            self.server.log.write("%s %s %s\n" % (
                self.command, self.path,
                self.headers.get("X-Forwarded-For", "-")))
            self.server.log.flush()

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, obj, status=200):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.record()
        parts = self.path.split("?")[0].split("/")
        if self.path.endswith("/large"):
            data = self.server.large
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            view = memoryview(data)
            for i in range(0, len(data), 256 * 1024):
                self.wfile.write(view[i:i + 256 * 1024])
            return
        if self.path.split("?")[0].endswith("/run") and len(parts) > 4:
            token = parts[4]
            obj = {"id": "run", "share_token": token,
                   "share_url": PUBLIC + "/public/" + token + "/r"}
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and ranged[6:].endswith("-"):
                # A static server's answer to `bytes=N-`: the rest, as 206.
                data = json.dumps(obj).encode()
                start = min(int(ranged[6:-1] or 0), len(data) - 1)
                self.send_response(206)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Range", "bytes %d-%d/%d"
                                 % (start, len(data) - 1, len(data)))
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])
                return
            self.send_json(obj)
            return
        self.send_json({"path": self.path})

    def do_POST(self):
        self.record()
        body = self.body()
        if "text/event-stream" in self.headers.get("Accept", ""):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(SSE_EVENTS):
                event = ("data: {\"n\": %d, \"url\": \"%s/public/t/r\"}\n\n"
                         % (i, PUBLIC)).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                self.server.stop.wait(0.01)
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_json({"received": len(body)})

    def other(self):
        self.record()
        self.body()
        self.send_json({"method": self.command})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = other


def main():
    port, log_path, mib = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.log = open(log_path, "a")
    server.log_lock = threading.Lock()
    server.large = large_body(mib)
    server.stop = threading.Event()
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
