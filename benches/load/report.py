#!/usr/bin/env python3
"""Turns run.sh's raw measurements (wrk outputs, /proc readings) into
markdown tables: the median of the rounds for each scenario and target,
ratios against direct and against nginx, memory figures, and the targets.
haproxy is a reference that does less work (no body rewrite): its rows and
its target say so.

    report.py WORK_DIR
"""
import csv
import os
import re
import statistics
import sys

MIB = 1024 * 1024
HAPROXY = "haproxy (no body rewrite)"


def parse_time(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(path):
    text = open(path).read()
    out = {"requests": 0, "seconds": float("nan"), "p50": float("nan"), "p99": float("nan"),
           "non2xx": 0, "errors": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = parse_time(m.group(2) + m.group(3)) / 1000.0
    for pct, key in (("50%", "p50"), ("99%", "p99")):
        m = re.search(r"^\s+" + re.escape(pct) + r"\s+(\S+)", text, re.M)
        if m:
            out[key] = parse_time(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] = sum(int(x) for x in m.groups())
    return out


def med(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt(v, digits=1):
    if v != v:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a != a or b != b or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def main():
    work = sys.argv[1]
    meta = {}
    for line in open(os.path.join(work, "meta.txt")):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            meta[k] = v
    tck = int(meta.get("clk_tck", "100"))
    rows = list(csv.DictReader(open(os.path.join(work, "results.tsv")), delimiter="\t"))
    sizes = {"small_2KiB": 2048, "rewrite_8MiB": 8 << 20}

    agg = {}
    problems = []
    for r in rows:
        w = parse_wrk(r["wrk"])
        if w["non2xx"] or w["errors"]:
            problems.append(f"{r['scenario']} {r['target']} round {r['round']}: "
                            f"{w['non2xx']} non-2xx, {w['errors']} socket errors")
        req = max(w["requests"], 1)
        rec = {
            "rps": w["requests"] / w["seconds"],
            "mbps": w["requests"] * sizes[r["scenario"]] / w["seconds"] / MIB,
            "p50": w["p50"],
            "p99": w["p99"],
            "proxy_us": (int(r["proxy_ticks"]) / tck / req * 1e6) if r["proxy_ticks"] != "-" else float("nan"),
            "up_us": int(r["upstream_ticks"]) / tck / req * 1e6,
            "hwm": (int(r["proxy_hwm_kib"]) / 1024) if r["proxy_hwm_kib"] != "-" else float("nan"),
        }
        agg.setdefault((r["scenario"], r["target"]), []).append(rec)

    def m(scenario, target, key):
        recs = agg.get((scenario, target), [])
        return med([x[key] for x in recs])

    p = print
    p(f"## sharegate load benchmark\n")
    p(f"CPU: {meta.get('cpu', '?')}; kernel {meta.get('kernel', '?')}; nginx {meta.get('nginx_version', '?')}; "
      f"wrk {meta.get('wrk_version', '?')}. Proxy and upstream pinned to one core, one worker each; "
      f"wrk on another core. {meta.get('rounds')} alternating rounds × {meta.get('duration')} s, "
      f"medians shown. Access/audit logs: {meta.get('logs')}. "
      f"sharegate threads: {meta.get('sharegate_threads')} "
      f"(runtime: {meta.get('sharegate_runtime')}).\n")
    p(f"Load average (1 min) before / after: {meta.get('loadavg_start', '?')} / {meta.get('loadavg_end', '?')} "
      "(well above 0 means other work shared the cores: treat the figures as noisy).\n")
    p("CPU/req is process CPU time (user+system, /proc/PID/stat) divided by requests served; "
      "it is coarse (10 ms ticks) but summed over a whole run. Peak RSS is VmHWM, reset before each run.\n")
    if any(t == "haproxy" for _, t in agg):
        p(f"{HAPROXY}, haproxy {meta.get('haproxy_version', '?')}, one process with "
          f"{meta.get('haproxy_threads', '?')} thread(s), is a reference proxy that does less work: "
          "share routes from the allow-list only and GET/HEAD only, Location rewritten, X-Forwarded-For set, "
          "but its bodies are NOT rewritten (haproxy cannot rewrite a streamed body; checked before measuring "
          "that they come back untouched). It writes no logs whatever the setting above: haproxy logs only "
          "through syslog, which the bench does not set up. Idle-connection and huge-body memory are not "
          "measured for it.\n")

    for scenario, conns, unit in (("small_2KiB", meta.get("conns"), "req/s"),
                                  ("rewrite_8MiB", meta.get("big_conns"), "MiB/s")):
        key = "rps" if unit == "req/s" else "mbps"
        p(f"### {scenario} ({conns} connections)\n")
        p(f"| target | {unit} | vs direct | vs nginx | p50 ms | p99 ms | proxy CPU µs/req "
          f"| vs nginx | upstream CPU µs/req | proxy peak RSS MiB |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        targets = ["direct", "nginx", "sharegate"]
        if scenario == "small_2KiB":
            targets.append("sharegate-jwt")
        targets.append("haproxy")
        for t in targets:
            if (scenario, t) not in agg:
                continue
            v = m(scenario, t, key)
            label = {"sharegate-jwt": "sharegate + ES256 JWT", "haproxy": HAPROXY}.get(t, t)
            p(f"| {label} | {fmt(v)} | {ratio(v, m(scenario, 'direct', key))} | "
              f"{ratio(v, m(scenario, 'nginx', key)) if t != 'direct' else '–'} | "
              f"{fmt(m(scenario, t, 'p50'), 2)} | {fmt(m(scenario, t, 'p99'), 2)} | "
              f"{fmt(m(scenario, t, 'proxy_us'))} | "
              f"{ratio(m(scenario, t, 'proxy_us'), m(scenario, 'nginx', 'proxy_us')) if t not in ('direct', 'nginx') else '–'} | "
              f"{fmt(m(scenario, t, 'up_us'))} | {fmt(m(scenario, t, 'hwm'))} |")
        p("")
        p("Per round (" + unit + "): " + "; ".join(
            f"{t} " + ", ".join(fmt(x[key]) for x in agg.get((scenario, t), []))
            for t in ["direct", "nginx", "sharegate", "sharegate-jwt", "haproxy"] if (scenario, t) in agg) + "\n")

    kib = lambda k: int(meta.get(k, "0") or 0) / 1024
    p("### Memory\n")
    p("| measure | sharegate | nginx |")
    p("|---|---:|---:|")
    p(f"| idle RSS after start (MiB) | {fmt(kib('sharegate_idle_rss_kib'))} | {fmt(kib('nginx_idle_rss_kib'))} (master + worker) |")
    p(f"| idle RSS after the load runs (MiB) | {fmt(kib('sharegate_after_load_rss_kib'))} | |")
    sg_added = kib("sharegate_idle_conns_with_kib") - kib("sharegate_idle_conns_before_kib")
    ng_added = kib("nginx_idle_conns_with_kib") - kib("nginx_idle_conns_before_kib")
    sg_n = int(meta.get("sharegate_idle_conns_served", "0") or 0)
    ng_n = int(meta.get("nginx_idle_conns_served", "0") or 0)
    p(f"| idle keep-alive connections held | {sg_n:,} | {ng_n:,} |")
    p(f"| RSS added by them (MiB) | {fmt(sg_added)} ({fmt(sg_added * 1024 / max(sg_n, 1), 2)} KiB/conn) "
      f"| {fmt(ng_added)} ({fmt(ng_added * 1024 / max(ng_n, 1), 2)} KiB/conn) |")
    huge = {}
    for t in ("sharegate", "nginx"):
        res = meta.get(f"{t}_huge_result")
        if res:
            code, size, secs = res.split(",")
            huge[t] = (code, int(size), float(secs),
                       kib(f"{t}_huge_hwm_kib") - kib(f"{t}_huge_before_kib"))
    if huge:
        p(f"| huge body: status, bytes, MiB/s | " + " | ".join(
            f"{h[0]}, {h[1]:,}, {fmt(h[1] / MIB / h[2])}" for h in (huge.get('sharegate'), huge.get('nginx')) if h) + " |")
        p(f"| huge body: peak RSS added (MiB) | " + " | ".join(
            fmt(h[3]) for h in (huge.get('sharegate'), huge.get('nginx')) if h) + " |")
    p("")

    # Targets.
    sm = lambda t, k: m("small_2KiB", t, k)
    rw = lambda t: m("rewrite_8MiB", t, "mbps")
    checks = [
        ("small route ≥ 1.5× nginx req/s", sm("sharegate", "rps") / sm("nginx", "rps"), ">=", 1.5, "×"),
        ("small route CPU/req ≤ 0.6× nginx", sm("sharegate", "proxy_us") / sm("nginx", "proxy_us"), "<=", 0.6, "×"),
    ]
    if ("small_2KiB", "haproxy") in agg:
        checks.append(("small route req/s above haproxy's", sm("sharegate", "rps") / sm("haproxy", "rps"),
                       ">", 1.0, "×"))
    checks += [
        ("8 MiB rewrite ≥ 3× nginx MiB/s", rw("sharegate") / rw("nginx"), ">=", 3.0, "×"),
        ("idle RSS ≤ 15 MiB", kib("sharegate_idle_rss_kib"), "<=", 15.0, " MiB"),
        (f"{sg_n:,} idle conns ≤ 100 MiB added", sg_added, "<=", 100.0, " MiB"),
    ]
    if "sharegate" in huge:
        checks.append(("huge body ≤ 16 MiB peak added", huge["sharegate"][3], "<=", 16.0, " MiB"))
    p("### Targets\n")
    p("| target | measured | met |")
    p("|---|---:|:---:|")
    for name, v, op, limit, unit in checks:
        ok = {">=": v >= limit, ">": v > limit, "<=": v <= limit}[op]
        p(f"| {name} | {fmt(v, 2)}{unit} | {'yes' if ok else '**no**'} |")
    # Every public URL in the huge body grows by the origins' length difference.
    grow = len("https://langsmith.corp.example") - len("https://smith.example.com")
    want = int(meta.get("huge_mib", "0") or 0) * MIB + grow * int(meta.get("count_huge", "0") or 0)
    for t, h in huge.items():
        if h[0] != "200" or h[1] != want:
            problems.append(f"huge body through {t}: status {h[0]}, {h[1]:,} bytes, expected {want:,}")
    if problems:
        p("\n**Errors during the runs:** " + "; ".join(problems))


if __name__ == "__main__":
    main()
