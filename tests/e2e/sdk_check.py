#!/usr/bin/env python3
"""Drives the official LangSmith Python SDK against sharegate.

Run by tests/e2e.rs, which owns the gateway and a stand-in LangSmith behind
it and asserts on this script's output and on what reached the stand-in.
This script only calls the SDK and reports, as one JSON object on stdout,
what each call returned or which exception it raised (type, HTTP status,
the gateway's `detail`). It asserts nothing itself.

Modes:
  inside   the company-network host: create shares, read them through the
           public routes, list, revoke, and read again after revoking.
  outside  a host outside the network: read shares that exist (the caller
           seeded them in the stand-in) and try to create and revoke shares.

The SDK's HTTP session is made to originate from --source (default
127.0.0.2 inside, 127.0.0.3 outside): Linux routes all of 127.0.0.0/8 to the
loopback interface, so the gateway sees a different client address per
mode. Retries are off, so one call is one request.
"""

import argparse
import json
import os
import sys
import warnings

SOURCES = {"inside": "127.0.0.2", "outside": "127.0.0.3"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="the gateway, e.g. http://127.0.0.1:8443")
    p.add_argument("--mode", required=True, choices=sorted(SOURCES))
    p.add_argument("--source", help="source address of the SDK's connections")
    p.add_argument("--run-id", required=True)
    p.add_argument("--dataset-id", required=True)
    p.add_argument("--run-token", help="an existing run share (outside mode)")
    p.add_argument("--dataset-token", help="an existing dataset share (outside mode)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    return p.parse_args(argv)


def make_client(endpoint, source, timeout):
    # Imported here so that a missing package is reported as such below.
    import langsmith
    import requests
    from requests.adapters import HTTPAdapter

    class SourceAddressAdapter(HTTPAdapter):
        """Binds every connection's source address; no retries."""

        def __init__(self, source_address):
            self._source_address = source_address
            super().__init__(max_retries=0)

        def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
            pool_kwargs["source_address"] = (self._source_address, 0)
            return super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    session = requests.Session()
    # No proxy from the environment: the gateway is on loopback.
    session.trust_env = False
    client = langsmith.Client(
        api_url=f"{endpoint}/api/v1",
        web_url=endpoint,
        api_key="lsv2_pt_e2e_placeholder_key",
        session=session,
        auto_batch_tracing=False,
        # Given, so the client does not fetch /info.
        info={},
        timeout_ms=int(timeout * 1000),
    )
    # The client mounts its own adapter; this one replaces it.
    adapter = SourceAddressAdapter(source)
    client.session.mount("http://", adapter)
    client.session.mount("https://", adapter)
    return langsmith, client


def http_response(exc):
    """The HTTP response behind an SDK exception, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        resp = getattr(exc, "response", None)
        if resp is not None and hasattr(resp, "status_code"):
            return resp
        exc = exc.__cause__ or exc.__context__
    return None


def call(op, fn):
    try:
        return {"op": op, "ok": True, "value": fn()}
    except Exception as exc:  # reported, not judged: the Rust test judges
        out = {"op": op, "ok": False, "error": type(exc).__name__, "message": str(exc)[:400]}
        resp = http_response(exc)
        if resp is not None:
            out["status"] = resp.status_code
            out["content_type"] = resp.headers.get("content-type", "")
            try:
                out["detail"] = resp.json().get("detail")
            except Exception:
                out["detail"] = None
        return out


def run_summary(run):
    return {"id": str(run.id), "name": run.name, "outputs": run.outputs}


def inside(client, args):
    r = []
    shared = call("share_run", lambda: client.share_run(args.run_id))
    r.append(shared)
    url = shared.get("value") or ""
    token = url.rstrip("/").split("/")[-2] if url.count("/") >= 2 else ""
    r.append(call("read_run_shared_link", lambda: client.read_run_shared_link(args.run_id)))
    r.append(call("run_is_shared", lambda: client.run_is_shared(args.run_id)))
    r.append(call("read_shared_run", lambda: run_summary(client.read_shared_run(url))))
    r.append(call("list_shared_runs", lambda: [run_summary(x) for x in client.list_shared_runs(token)]))
    ds = call("share_dataset", lambda: dict(client.share_dataset(args.dataset_id)))
    r.append(ds)
    dtoken = (ds.get("value") or {}).get("share_token", "")
    r.append(
        call(
            "read_shared_dataset",
            lambda: (lambda d: {"id": str(d.id), "name": d.name, "url": d.url})(client.read_shared_dataset(dtoken)),
        )
    )
    r.append(call("unshare_run", lambda: client.unshare_run(args.run_id)))
    r.append(call("run_is_shared_after_unshare", lambda: client.run_is_shared(args.run_id)))
    r.append(call("read_shared_run_after_unshare", lambda: run_summary(client.read_shared_run(token))))
    r.append(call("unshare_dataset", lambda: client.unshare_dataset(args.dataset_id)))
    r.append(call("read_shared_dataset_after_unshare", lambda: client.read_shared_dataset(dtoken).name))
    return r


def outside(client, args):
    if not args.run_token or not args.dataset_token:
        raise SystemExit("outside mode needs --run-token and --dataset-token")
    return [
        call("read_shared_run", lambda: run_summary(client.read_shared_run(args.run_token))),
        call("list_shared_runs", lambda: [run_summary(x) for x in client.list_shared_runs(args.run_token)]),
        call("read_shared_dataset", lambda: client.read_shared_dataset(args.dataset_token).name),
        call("read_run_shared_link", lambda: client.read_run_shared_link(args.run_id)),
        call("share_run", lambda: client.share_run(args.run_id)),
        call("share_dataset", lambda: dict(client.share_dataset(args.dataset_id))),
        call("unshare_run", lambda: client.unshare_run(args.run_id)),
        call("unshare_dataset", lambda: client.unshare_dataset(args.dataset_id)),
    ]


def main(argv):
    args = parse_args(argv)
    source = args.source or SOURCES[args.mode]
    # Nothing from the environment may point the SDK elsewhere or turn on
    # tracing to a hosted endpoint.
    for key in list(os.environ):
        if key.startswith(("LANGSMITH_", "LANGCHAIN_")):
            del os.environ[key]
    os.environ["LANGSMITH_TRACING"] = "false"
    warnings.simplefilter("ignore")
    try:
        langsmith, client = make_client(args.endpoint, source, args.timeout)
    except ImportError as exc:
        print(json.dumps({"skipped": f"the langsmith package is not importable: {exc}"}))
        return 0
    results = inside(client, args) if args.mode == "inside" else outside(client, args)
    print(
        json.dumps(
            {"mode": args.mode, "source": source, "sdk_version": langsmith.__version__, "results": results},
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
