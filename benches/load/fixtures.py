#!/usr/bin/env python3
"""Writes the upstream's fixed files for the load benchmark.

    fixtures.py DIR [HUGE_MIB]

DIR/share.json  2 KiB JSON share-route response with 8 public URLs
DIR/big.json    8 MiB JSON with a public URL about every 4 KiB
DIR/huge.json   HUGE_MIB MiB of the same (only when HUGE_MIB > 0)

Prints "NAME COUNT" for big.json and huge.json: the public URLs each holds.
"""
import json
import os
import sys

PUBLIC = "https://smith.example.com"


def share_json():
    runs = []
    for i in range(8):
        runs.append({
            "id": f"{i:08x}-5c1e-4a0b-9f00-0123456789ab",
            "name": "ChatOpenAI",
            "run_type": "llm",
            "url": f"{PUBLIC}/public/6a3c9f1e-2b7d-4e58-9c41-8f0d2a6b5e17/r?run={i}",
            "start_time": "2026-01-01T00:00:00.000000",
            "total_tokens": 1234 + i,
        })
    doc = {"share_token": "6a3c9f1e-2b7d-4e58-9c41-8f0d2a6b5e17", "runs": runs, "pad": ""}
    text = json.dumps(doc, separators=(",", ":"))
    doc["pad"] = "x" * max(0, 2048 - len(text) - 1)
    text = json.dumps(doc, separators=(",", ":")) + "\n"
    assert len(text) == 2048 and text.count(PUBLIC) == 8, (len(text), text.count(PUBLIC))
    return text.encode()


def record(i):
    """About 4 KiB of JSON with one public URL."""
    filler = "Which hotels have the highest ratings in the heart of the city? " * 60
    return (
        '{"id":"%08x-5c1e-4a0b-9f00-0123456789ab","url":"%s/public/%08x-2b7d-4e58-9c41-8f0d2a6b5e17/r",'
        '"inputs":{"messages":[{"role":"user","content":"%s"}]},'
        '"extra":{"metadata":{"ls_provider":"openai","ls_model_name":"gpt-4o"}}},' % (i, PUBLIC, i, filler[:3900])
    ).encode()


def write_records(path, size):
    """Writes `size` bytes; returns how many public URLs they hold."""
    block = b"".join(record(i) for i in range(256))  # ~1 MiB, 256 URLs
    urls = 0
    with open(path, "wb") as f:
        f.write(b"[")
        left = size - 2
        while left > 0:
            part = block[:left]
            f.write(part)
            urls += part.count(PUBLIC.encode())
            left -= len(part)
        f.write(b"]")
    return urls


def main():
    out = sys.argv[1]
    huge_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "share.json"), "wb") as f:
        f.write(share_json())
    print("big.json", write_records(os.path.join(out, "big.json"), 8 << 20))
    if huge_mib > 0:
        print("huge.json", write_records(os.path.join(out, "huge.json"), huge_mib << 20))


if __name__ == "__main__":
    main()
