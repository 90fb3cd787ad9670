#!/usr/bin/env bash
# Soak test: the release gateway under mixed traffic for a long stretch,
# with config reloads and upstream restarts, watching for errors that
# should not happen and for memory or descriptor growth. Not run in CI.
#
#   benches/soak/run.sh                  # the full soak: 10 minutes
#   DURATION=120 benches/soak/run.sh     # a 2-minute check
#
# What it does (soak.py does steps 2-6):
#  1. builds sharegate in release (honours CARGO_TARGET_DIR; SKIP_BUILD=1
#     uses the binary already built);
#  2. starts a stand-in upstream (upstream.py, python3 http.server) with
#     JSON share reads, an SSE stream and a large body, and the gateway
#     with a generated config (rewrite on, admin listener for /metrics);
#  3. drives mixed traffic from WORKERS loopback clients: share reads, POST
#     queries, SSE streams and large bodies from 127.0.0.2 (inside), and
#     refused requests (outsider reads and share-management writes from
#     127.0.0.3, view-only writes, method overrides, reads under a foreign
#     Host (DNS rebinding) and cross-site fetches from inside), and range
#     reads of a share answer (the whole body comes back, rewritten),
#     method overrides in a form body and methods in lower case;
#  4. every RELOAD_EVERY seconds edits the config (revokes a token, or
#     lifts the revocation), sends SIGHUP, and checks that the new policy
#     is in force;
#  5. kills and restarts the upstream twice (at 1/3 and 2/3 of the run);
#     502s and cut streams are expected only around those restarts;
#  6. reports requests and errors by kind, whether any refused request
#     reached the upstream, and the gateway's RSS and open descriptors
#     (/proc/PID/status, /proc/PID/fd) at start and at the end.
#
# Knobs (environment): DURATION=600 (seconds) WORKERS=8 RELOAD_EVERY=20
# LARGE_MIB=4 KEEP=0 (1 keeps the work directory with the logs)
# SKIP_BUILD=0. Needs Linux (127.0.0.0/8 on loopback, /proc) and python3.
# The exit status is 0 only when no unexpected error and no leak was seen.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SKIP_BUILD=${SKIP_BUILD:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

command -v python3 >/dev/null 2>&1 || { echo "run.sh: python3 is required" >&2; exit 1; }
if [ "$SKIP_BUILD" != 1 ]; then
    echo "building sharegate (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet) >&2
fi
BIN=$TARGET_DIR/release/sharegate
[ -x "$BIN" ] || { echo "run.sh: no binary at $BIN" >&2; exit 1; }

exec python3 "$HERE/soak.py" \
    --gateway "$BIN" \
    --upstream "$HERE/upstream.py" \
    --duration "${DURATION:-600}" \
    --workers "${WORKERS:-8}" \
    --reload-every "${RELOAD_EVERY:-20}" \
    --large-mib "${LARGE_MIB:-4}" \
    --keep "${KEEP:-0}"
