"""Soak driver for sharegate (python3 standard library only); run.sh calls it.

Starts the stand-in upstream and the gateway, drives mixed traffic from
loopback clients (127.0.0.2 inside, 127.0.0.3 outside) for --duration
seconds while reloading the config by SIGHUP and restarting the upstream
twice, then reports errors by kind, whether any refused request reached the
upstream, and the gateway's RSS and open descriptors over the run.
"""

import argparse
import collections
import http.client
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

INSIDE = "127.0.0.2"
OUTSIDE = "127.0.0.3"
TOKEN = "6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d"
REVOKABLE = "0b7e4a1c-9d2f-4e3a-8b5c-6d7e8f9a0b1c"
RUN_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
PUBLIC = "https://smith.example.com"
PRIVATE = "https://langsmith.corp.example"
SSE_EVENTS = 20
RESTART_DOWN = 2.0      # seconds the upstream stays down per restart
RESTART_GRACE = 2.0     # seconds after recovery in which 502s still count as expected
TIMEOUT = 30.0          # per-request socket timeout

CONFIG = """\
[server]
listen = ["127.0.0.1:{port}"]
hosts = ["127.0.0.1"]

[upstream]
url = "http://127.0.0.1:{upstream_port}"
connect_timeout = "2s"
response_timeout = "10s"

[networks]
inside = ["127.0.0.2/32"]

[share]
profile = "langsmith"
allow_from = ["inside"]
manage_from = ["inside"]
revoked_tokens = [{revoked}]

[default]
allow_from = "any"

[rewrite]
from = ["{public}"]
to = "{private}"

[limits]
share_rate = "off"

[admin]
listen = "127.0.0.1:{admin_port}"

[reload]
watch = false

[log]
level = "warn"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid):
    """RSS and peak RSS (KiB), threads and open descriptors of `pid`."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
        out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        pass
    return out


class Upstream:
    def __init__(self, script, port, log, mib, workdir):
        self.args = [sys.executable, script, str(port), log, str(mib)]
        self.stderr = open(os.path.join(workdir, "upstream.stderr"), "a")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                     stderr=self.stderr)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        if not ready or self.proc.stdout.readline().strip() != b"ready":
            raise SystemExit("soak: the upstream did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = collections.Counter()
        self.expected = collections.Counter()
        self.unexpected = collections.Counter()
        self.examples = {}
        self.retries = 0
        self.windows = []       # (start, end) of upstream restarts
        self.open_window = None

    def in_window(self, t0, t1):
        with self.lock:
            spans = list(self.windows)
            if self.open_window is not None:
                spans.append((self.open_window, float("inf")))
        return any(t0 <= end and t1 >= start for start, end in spans)

    def record(self, kind, error, t0, t1, expected_in_window):
        with self.lock:
            if error is None:
                self.ok[kind] += 1
                return
        key = "%s: %s" % (kind, error)
        window = expected_in_window and self.in_window(t0, t1)
        with self.lock:
            if window:
                self.expected[key] += 1
            else:
                self.unexpected[key] += 1
                self.examples.setdefault(key, time.strftime("%H:%M:%S"))


class Client:
    """One keep-alive connection per source address, reopened on failure."""

    def __init__(self, port):
        self.port = port
        self.conns = {}

    def conn(self, source):
        c = self.conns.get(source)
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT,
                                           source_address=(source, 0))
            self.conns[source] = c
        return c

    def drop(self, source):
        c = self.conns.pop(source, None)
        if c:
            c.close()

    def request(self, source, method, path, body=None, headers=None):
        """(status, headers, body bytes, complete) or an exception. A request
        that fails before any answer on a reused connection (the gateway
        closed it while idle) is retried once on a new one, as HTTP clients
        do (RFC 9112 §9.3.1)."""
        headers = dict(headers or {})
        for attempt in (0, 1):
            c = self.conn(source)
            reused = c.sock is not None
            try:
                c.request(method, path, body=body, headers=headers)
                resp = c.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.BadStatusLine, BrokenPipeError) as e:
                self.drop(source)
                if reused and attempt == 0:
                    STATS.retries += 1
                    continue
                raise e
            try:
                data = resp.read()
                complete = True
            except http.client.IncompleteRead as e:
                data, complete = e.partial, False
                self.drop(source)
            except (ConnectionError, socket.timeout):
                data, complete = b"", False
                self.drop(source)
            if resp.will_close:
                self.drop(source)
            return resp.status, resp.headers, data, complete
        raise RuntimeError("unreachable")


STATS = Stats()


def expected_large(mib):
    line = ('{"url": "' + PUBLIC + '/public/' + TOKEN + '/r",'
            ' "pad": "' + "x" * 40 + '"}\n').encode()
    n = (mib * 1024 * 1024) // len(line)
    return len(line.replace(PUBLIC.encode(), PRIVATE.encode()) * n)


def check(kind, status, data, complete, want, large_len):
    """None when the answer is what the policy promises, else what is wrong."""
    if status != want:
        return "status %d" % status
    if not complete:
        return "truncated body"
    if want != 200:
        return None
    if PUBLIC.encode() in data:
        return "public origin not rewritten"
    if kind in ("share_read", "range_read"):
        try:
            url = json.loads(data)["share_url"]
        except (ValueError, KeyError):
            return "bad JSON"
        if not url.startswith(PRIVATE):
            return "share_url not rewritten"
    elif kind == "sse":
        if data.count(b"data: ") != SSE_EVENTS:
            return "%d of %d events" % (data.count(b"data: "), SSE_EVENTS)
    elif kind == "large":
        if len(data) != large_len:
            return "large body of %d bytes, expected %d" % (len(data), large_len)
    return None


# kind: (weight, source, method, path, body, headers, expected status)
MIX = {
    "share_read": (30, INSIDE, "GET", "/api/v1/public/%s/run" % TOKEN, None, {}, 200),
    "share_query": (14, INSIDE, "POST", "/api/v1/public/%s/runs/query" % TOKEN,
                    b'{"limit": 10}', {"Content-Type": "application/json"}, 200),
    "sse": (6, INSIDE, "POST", "/api/v1/public/%s/runs/query" % TOKEN,
            b'{"limit": 10}', {"Content-Type": "application/json",
                               "Accept": "text/event-stream"}, 200),
    "large": (2, INSIDE, "GET", "/api/v1/public/%s/large" % TOKEN, None, {}, 200),
    "open_route": (12, OUTSIDE, "GET", "/api/v1/info", None, {}, 200),
    "outsider_read": (12, OUTSIDE, "GET", "/api/v1/public/%s/run?soak=outsider" % TOKEN,
                      None, {}, 403),
    "outsider_manage": (8, OUTSIDE, "DELETE", "/api/v1/runs/%s/share?soak=manage" % RUN_ID,
                        None, {}, 403),
    "view_only": (8, INSIDE, "DELETE", "/api/v1/public/%s/run?soak=viewonly" % TOKEN,
                  None, {}, 405),
    "override": (8, INSIDE, "POST", "/api/v1/public/%s/runs/query?soak=override" % TOKEN,
                 b"{}", {"X-HTTP-Method-Override": "DELETE",
                         "Content-Type": "application/json"}, 400),
    # DNS rebinding: a request from inside under a name that is not ours.
    "misdirected": (4, INSIDE, "GET", "/api/v1/public/%s/run?soak=misdirected" % TOKEN,
                    None, {"Host": "attacker.example"}, 421),
    # A page on another site fetching the share API through a browser inside.
    "cross_site": (4, INSIDE, "GET", "/api/v1/public/%s/run?soak=crosssite" % TOKEN,
                   None, {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors",
                          "Sec-Fetch-Dest": "empty"}, 403),
    # The same from a browser too old for Fetch Metadata: its Origin decides.
    "old_browser": (3, INSIDE, "POST", "/api/v1/public/%s/runs/query?soak=oldbrowser" % TOKEN,
                    b"{}", {"Origin": "https://attacker.example",
                            "Content-Type": "application/json"}, 403),
    # Paths LangSmith's frontend would route to a share or management route:
    # an api segment below the root, and the old /api/X name.
    "below_root": (3, OUTSIDE, "GET", "/x/api/public/%s/run?soak=belowroot" % TOKEN,
                   None, {}, 400),
    "old_name": (3, OUTSIDE, "PUT", "/api/runs/%s/share?soak=oldname" % RUN_ID,
                 b"{}", {"Content-Type": "application/json"}, 403),
    # A method override in a form body, and a method in lower case (an
    # upstream that folds case would run the PUT the policy never judged).
    "body_override": (3, INSIDE, "POST", "/api/v1/public/%s/runs/query?soak=bodyoverride" % TOKEN,
                      b"_method=DELETE", {"Content-Type": "application/x-www-form-urlencoded"},
                      400),
    "lower_method": (3, INSIDE, "put", "/api/v1/runs/%s/share?soak=lower" % RUN_ID,
                     b"{}", {"Content-Type": "application/json"}, 400),
    # A range of a share answer: the upstream's 206 slice would keep the
    # public origin, so the gateway fetches the whole and rewrites it.
    "range_read": (3, INSIDE, "GET", "/api/v1/public/%s/run?ranged=1" % TOKEN,
                   None, {"Range": "bytes=5-"}, 200),
}


def worker(port, stop, large_len, seed):
    rng = random.Random(seed)
    kinds = list(MIX)
    weights = [MIX[k][0] for k in kinds]
    client = Client(port)
    while not stop.is_set():
        kind = rng.choices(kinds, weights)[0]
        _, source, method, path, body, headers, want = MIX[kind]
        t0 = time.monotonic()
        try:
            status, _, data, complete = client.request(source, method, path, body, headers)
            error = check(kind, status, data, complete, want, large_len)
        except (OSError, http.client.HTTPException) as e:
            error = "connection error (%s)" % type(e).__name__
        t1 = time.monotonic()
        # Around an upstream restart an allowed request may get 502 or be
        # cut short; a refusal never depends on the upstream.
        STATS.record(kind, error, t0, t1, expected_in_window=(want == 200))
        if error is not None:
            # Back off as a client would, instead of spinning on fast 502s.
            stop.wait(0.05)
    for source in list(client.conns):
        client.drop(source)


def metric(admin_port, name):
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    found = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def wait_until(what, fn, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fn():
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    print("soak: timed out waiting for %s" % what, file=sys.stderr)
    return False


def share_status(port, token):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                   source_address=(INSIDE, 0))
    try:
        c.request("GET", "/api/v1/public/%s/run" % token)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--reload-every", type=float, default=20)
    ap.add_argument("--large-mib", type=int, default=4)
    ap.add_argument("--keep", type=int, default=0)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sharegate-soak-")
    port, upstream_port, admin_port = free_port(), free_port(), free_port()
    config_path = os.path.join(work, "sharegate.toml")
    upstream_log = os.path.join(work, "upstream-requests.log")

    def write_config(revoked):
        text = CONFIG.format(port=port, upstream_port=upstream_port,
                             admin_port=admin_port, public=PUBLIC, private=PRIVATE,
                             revoked='"%s"' % REVOKABLE if revoked else "")
        tmp = config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, config_path)

    write_config(False)
    upstream = Upstream(args.upstream, upstream_port, upstream_log, args.large_mib, work)
    upstream.start()
    gateway_log = open(os.path.join(work, "gateway.log"), "w")
    gateway = subprocess.Popen([args.gateway, "run", "--config", config_path],
                               stdout=gateway_log, stderr=subprocess.STDOUT)
    stop = threading.Event()
    failures = []
    try:
        def ready():
            c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
            try:
                c.request("GET", "/readyz")
                return c.getresponse().status == 200
            finally:
                c.close()
        if not wait_until("the gateway to be ready", ready, 30):
            raise SystemExit("soak: the gateway did not become ready (see %s)" % work)

        samples = [("start", time.monotonic(), proc_stats(gateway.pid))]
        large_len = expected_large(args.large_mib)
        threads = [threading.Thread(target=worker, args=(port, stop, large_len, i))
                   for i in range(args.workers)]
        begin = time.monotonic()
        for t in threads:
            t.start()

        restarts = [begin + args.duration / 3, begin + 2 * args.duration / 3]
        next_reload = begin + args.reload_every
        next_sample = begin + 10
        revoked = False
        reloads = reload_failures = 0
        end = begin + args.duration
        while time.monotonic() < end:
            now = time.monotonic()
            if gateway.poll() is not None:
                failures.append("the gateway exited with %s" % gateway.returncode)
                break
            if restarts and now >= restarts[0]:
                restarts.pop(0)
                with STATS.lock:
                    STATS.open_window = time.monotonic()
                upstream.stop()
                time.sleep(RESTART_DOWN)
                upstream.start()
                back = wait_until("a share read after the upstream restart",
                                  lambda: share_status(port, TOKEN) == 200, 30)
                if not back:
                    failures.append("no share read succeeded after an upstream restart")
                with STATS.lock:
                    STATS.windows.append((STATS.open_window,
                                          time.monotonic() + RESTART_GRACE))
                    STATS.open_window = None
                continue
            if now >= next_reload:
                next_reload = now + args.reload_every
                revoked = not revoked
                write_config(revoked)
                os.kill(gateway.pid, signal.SIGHUP)
                want = 404 if revoked else 200
                reloads += 1
                if not wait_until("the reloaded policy", lambda: share_status(port, REVOKABLE) == want, 15):
                    reload_failures += 1
                continue
            if now >= next_sample:
                next_sample = now + 10
                samples.append(("t+%ds" % (now - begin), now, proc_stats(gateway.pid)))
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(TIMEOUT + 10)
        elapsed = time.monotonic() - begin
        # Let closed client connections leave the gateway's table. Idle
        # upstream connections stay pooled (for 60 s), at most one per
        # worker plus the probes.
        pool = args.workers + 4
        settled = wait_until(
            "client connections to close",
            lambda: proc_stats(gateway.pid).get("fds", 0) <= samples[0][2].get("fds", 0) + pool, 15)
        samples.append(("end", time.monotonic(), proc_stats(gateway.pid)))
        if not settled:
            failures.append("open descriptors did not come back down after the traffic stopped")
        reload_metric = metric(admin_port, "sharegate_config_reloads")
    finally:
        stop.set()
        if gateway.poll() is None:
            gateway.terminate()
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
        upstream.stop()

    # --- refused requests that reached the upstream ------------------------
    leaks = collections.Counter()
    seen = 0
    with open(upstream_log) as f:
        for line in f:
            seen += 1
            method, path, xff = line.split()
            if "soak=" in path or "/share" in path or method in ("DELETE", "PUT", "PATCH"):
                leaks["%s %s" % (method, path)] += 1
            elif path.startswith("/api/v1/public/") and xff != INSIDE:
                leaks["%s %s from %s" % (method, path, xff)] += 1

    # --- report ------------------------------------------------------------
    total_ok = sum(STATS.ok.values())
    total_exp = sum(STATS.expected.values())
    total_bad = sum(STATS.unexpected.values())
    total = total_ok + total_exp + total_bad
    print("# sharegate soak: %.0f s, %d workers" % (elapsed, args.workers))
    print()
    print("requests: %d (%.0f/s); as promised: %d; expected errors (upstream restarts): %d; "
          "unexpected errors: %d; keep-alive retries: %d"
          % (total, total / max(elapsed, 1), total_ok, total_exp, total_bad, STATS.retries))
    print()
    print("| kind | as promised |")
    print("|---|---|")
    for kind in MIX:
        print("| %s | %d |" % (kind, STATS.ok[kind]))
    print()
    print("expected errors by kind (inside a restart window):")
    for key, n in sorted(STATS.expected.items()):
        print("  %-50s %d" % (key, n))
    if not STATS.expected:
        print("  none")
    print("unexpected errors by kind:")
    for key, n in sorted(STATS.unexpected.items()):
        print("  %-50s %d (first at %s)" % (key, n, STATS.examples[key]))
    if not STATS.unexpected:
        print("  none")
    print()
    print("upstream restarts: %d; windows: %s" % (
        len(STATS.windows),
        ", ".join("%.1f s" % (b - a) for a, b in STATS.windows)))
    print("config reloads by SIGHUP: %d sent, %d not in force within 15 s; gateway metric: %s"
          % (reloads, reload_failures,
             ", ".join("%s=%g" % kv for kv in sorted(reload_metric.items())) or "-"))
    print("upstream saw %d requests; refused requests among them: %d %s"
          % (seen, sum(leaks.values()), dict(leaks) if leaks else ""))
    print()
    print("| gateway | RSS KiB | peak RSS KiB | threads | open fds |")
    print("|---|---|---|---|---|")
    for name, _, s in samples:
        if name in ("start", "end") or s is samples[1][2] or s is samples[-2][2]:
            print("| %s | %s | %s | %s | %s |" % (
                name, s.get("VmRSS", "?"), s.get("VmHWM", "?"),
                s.get("Threads", "?"), s.get("fds", "?")))
    rss = [s.get("VmRSS", 0) for _, _, s in samples]
    print("RSS over %d samples: min %d KiB, max %d KiB" % (len(rss), min(rss), max(rss)))
    if len(samples) > 2:
        warm, last = samples[1][2], samples[-1][2]
        print("from warm-up (t+10s) to end: RSS %+d KiB, open fds %+d "
              "(upstream connections idle in the pool count until they expire)"
              % (last.get("VmRSS", 0) - warm.get("VmRSS", 0),
                 last.get("fds", 0) - warm.get("fds", 0)))
    warn = sum(1 for line in open(os.path.join(work, "gateway.log")) if "WARN" in line or "ERROR" in line)
    print("gateway log lines at warn/error: %d" % warn)

    if reload_failures:
        failures.append("%d reloads not in force" % reload_failures)
    if total_bad:
        failures.append("%d unexpected errors" % total_bad)
    if leaks:
        failures.append("refused requests reached the upstream")
    if len(STATS.windows) < 2 and args.duration >= 30:
        failures.append("the upstream was not restarted twice")
    print()
    print("result: %s" % ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    if args.keep:
        print("work directory kept: %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
