#!/usr/bin/env python3
"""Opens COUNT keep-alive connections to HOST:PORT, sends one GET on each
and reads its response, then holds them all idle until STOP_FILE exists or
HOLD_S seconds pass, whichever is first, and closes them. Prints
"ready N" once all N connections have been served. Bounded in count and time.

    idle_conns.py HOST PORT PATH COUNT HOLD_S STOP_FILE
"""
import os
import resource
import selectors
import socket
import sys
import time


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count, hold, stop_file = int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, count + 64)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    socks = []
    pending = {}
    deadline = time.monotonic() + 60
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(request)
        s.setblocking(False)
        socks.append(s)
        pending[s.fileno()] = b""
        sel.register(s, selectors.EVENT_READ)
        # Drain whatever has answered so far, so the server is never far behind.
        for key, _ in sel.select(timeout=0):
            drain(sel, key.fileobj, pending)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            drain(sel, key.fileobj, pending)
    served = len(socks) - len(pending)
    print(f"ready {served}", flush=True)
    end = time.monotonic() + hold
    while time.monotonic() < end and not os.path.exists(stop_file):
        time.sleep(0.1)
    for s in socks:
        s.close()


def drain(sel, s, pending):
    """Reads until the response (head + Content-Length body) is complete."""
    fd = s.fileno()
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return
    if not data:
        sel.unregister(s)
        pending.pop(fd, None)
        return
    buf = pending.get(fd, b"") + data
    head, sep, body = buf.partition(b"\r\n\r\n")
    if sep:
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        if len(body) >= length:
            sel.unregister(s)
            pending.pop(fd, None)
            return
    pending[fd] = buf


if __name__ == "__main__":
    main()
