#!/usr/bin/env bash
# Load benchmark: sharegate against nginx doing the same job, against
# haproxy doing less of it (no body rewrite), and against the upstream
# reached directly, all on loopback.
#
#   benches/load/run.sh            # full run (~9 minutes), markdown on stdout
#   ROUNDS=1 DURATION=3 HUGE_MIB=64 IDLE_CONNS=1000 benches/load/run.sh   # quick
#
# What it does:
#  1. installs nginx, haproxy, wrk, curl, openssl, python3 with apt-get when
#     missing;
#  2. builds sharegate in release (honours CARGO_TARGET_DIR);
#  3. starts on 127.0.0.1, pinned to PROXY_CORE with one worker each: the
#     upstream (nginx serving fixed files), nginx as the proxy, haproxy as
#     a reference proxy, sharegate, and sharegate requiring an ES256 JWT;
#  4. checks that each proxy does the job (share-route DELETE refused, a
#     client from 127.0.0.2 refused, bodies and Location rewritten; haproxy
#     cannot rewrite bodies, so its must come back untouched) and stops if
#     one does not: a proxy that skips the work must not win;
#  5. measures in alternating rounds, wrk pinned to LOAD_CORE: req/s, p50/p99,
#     CPU time per request of the proxy and of the upstream (utime+stime from
#     /proc/PID/stat), peak RSS (VmHWM, reset before each run); then idle RSS,
#     RSS with IDLE_CONNS idle keep-alive connections, and peak RSS while a
#     HUGE_MIB MiB body is streamed and rewritten;
#  6. prints markdown tables and the targets, met or not.
#
# Knobs (environment): ROUNDS=4 (one per order) DURATION=10 (seconds per run) CONNS=64
# BIG_CONNS=4 IDLE_CONNS=10000 HUGE_MIB=1024 LOGS=on|off (access/audit logs
# of nginx and sharegate to files, or off; haproxy logs only through syslog
# and runs without logs) PROXY_CORE=0 LOAD_CORE=1 KEEP=0 (1 keeps
# the work directory) SKIP_BUILD=0 (1 uses an already built binary).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
BIG_CONNS=${BIG_CONNS:-4}
IDLE_CONNS=${IDLE_CONNS:-10000}
HUGE_MIB=${HUGE_MIB:-1024}
LOGS=${LOGS:-on}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
KEEP=${KEEP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

TOKEN=6a3c9f1e-2b7d-4e58-9c41-8f0d2a6b5e17
SMALL=/api/v1/public/$TOKEN/runs/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
BIG=/api/v1/public/$TOKEN/examples
HUGE=/api/v1/public/$TOKEN/export
REDIRECT=/public/$TOKEN/d
PUBLIC=https://smith.example.com
PRIVATE=https://langsmith.corp.example
JWT_HEADER=x-goog-iap-jwt-assertion

say() { printf '%s\n' "$*" >&2; }
die() { say "run.sh: $*"; exit 1; }

# --- 1. tools ---------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    say "installing: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
fi
nginx -V 2>&1 | grep -q http_sub_module || die "this nginx lacks http_sub_module (sub_filter); install the 'nginx' package"
[ "$(nproc)" -ge 2 ] || say "warning: one CPU; proxy and load generator share it"

# --- 2. build ---------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$SKIP_BUILD" != 1 ]; then
    say "building sharegate (release)"
    (cd "$ROOT" && cargo build --release --quiet) >&2
fi
BIN=$TARGET_DIR/release/sharegate
[ -x "$BIN" ] || die "no binary at $BIN"

WORK=$(mktemp -d /tmp/sharegate-load.XXXXXX)
mkdir -p "$WORK/www" "$WORK/tmp" "$WORK/out"
# nginx workers run as an unprivileged user (www-data) and must read the files.
chmod 755 "$WORK" "$WORK/www" "$WORK/tmp"
cp "$BIN" "$WORK/sharegate"

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Raise the descriptor limit for the idle-connection scenario (children inherit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CONNS + 256)) ]; then
    IDLE_CONNS=$(($(ulimit -n) - 256))
    say "ulimit -n is $(ulimit -n): idle connections cut to $IDLE_CONNS"
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
UP_PORT=$(free_port)
NGINX_PORT=$(free_port)
SG_PORT=$(free_port)
SGJ_PORT=$(free_port)
HAP_PORT=$(free_port)
[ "$(printf '%s\n' "$UP_PORT" "$NGINX_PORT" "$SG_PORT" "$SGJ_PORT" "$HAP_PORT" | sort -u | wc -l)" = 5 ] ||
    die "could not get five distinct free ports; run again"

# --- 3. fixtures, configs, processes ---------------------------------------
say "writing fixtures (huge body: $HUGE_MIB MiB)"
python3 "$HERE/fixtures.py" "$WORK/www" "$HUGE_MIB" >"$WORK/counts.txt"
TOKEN_JWT=$(python3 "$HERE/mint_es256.py" "$WORK")

if [ "$LOGS" = on ]; then
    ACCESS_LOG="$WORK/proxy-nginx.access.log"
    LOG_LEVEL=info
else
    ACCESS_LOG=off
    LOG_LEVEL=warn
fi
fill() { # template out [REQUIRE] [IDENTITY file]
    local identity=""
    [ -n "${4:-}" ] && identity=$(cat "$4")
    python3 - "$1" "$2" "$WORK" "$UP_PORT" "${5:-}" "${3:-network}" "$ACCESS_LOG" "$LOG_LEVEL" "$identity" <<'EOF'
import sys
src, out, work, up, port, require, access, level, identity = sys.argv[1:10]
text = open(src).read()
for k, v in {"@DIR@": work, "@UPSTREAM_PORT@": up, "@PROXY_PORT@": port, "@REQUIRE@": require,
             "@ACCESS_LOG@": access, "@LOG_LEVEL@": level, "@IDENTITY@": identity}.items():
    text = text.replace(k, v)
open(out, "w").write(text)
EOF
}
fill "$HERE/upstream-nginx.conf.in" "$WORK/upstream.conf" "" "" ""
fill "$HERE/proxy-nginx.conf.in" "$WORK/proxy-nginx.conf" "" "" "$NGINX_PORT"
fill "$HERE/proxy-haproxy.cfg.in" "$WORK/proxy-haproxy.cfg" "" "" "$HAP_PORT"
fill "$HERE/sharegate.toml.in" "$WORK/sharegate.toml" network "" "$SG_PORT"
fill "$HERE/sharegate.toml.in" "$WORK/sharegate-jwt.toml" network_and_identity "$HERE/identity-jwt.toml" "$SGJ_PORT"

"$WORK/sharegate" check -c "$WORK/sharegate.toml" >"$WORK/out/check.txt" 2>&1 ||
    { cat "$WORK/out/check.txt" >&2; die "sharegate rejects the bench config"; }
"$WORK/sharegate" check -c "$WORK/sharegate-jwt.toml" >"$WORK/out/check-jwt.txt" 2>&1 ||
    { cat "$WORK/out/check-jwt.txt" >&2; die "sharegate rejects the JWT bench config"; }
haproxy -c -q -f "$WORK/proxy-haproxy.cfg" >"$WORK/out/check-haproxy.txt" 2>&1 ||
    { cat "$WORK/out/check-haproxy.txt" >&2; die "haproxy rejects the bench config"; }

taskset -c "$PROXY_CORE" nginx -c "$WORK/upstream.conf" -p "$WORK" 2>>"$WORK/upstream.error.log" &
UP_PID=$!; PIDS+=("$UP_PID")
taskset -c "$PROXY_CORE" nginx -c "$WORK/proxy-nginx.conf" -p "$WORK" 2>>"$WORK/proxy-nginx.error.log" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
# -db: foreground, one process (no master), so its PID is the one to read.
taskset -c "$PROXY_CORE" haproxy -db -f "$WORK/proxy-haproxy.cfg" 2>>"$WORK/proxy-haproxy.error.log" &
HAP_PID=$!; PIDS+=("$HAP_PID")
taskset -c "$PROXY_CORE" "$WORK/sharegate" run -c "$WORK/sharegate.toml" \
    2>"$WORK/sharegate.log" >&2 &
SG_PID=$!; PIDS+=("$SG_PID")
taskset -c "$PROXY_CORE" "$WORK/sharegate" run -c "$WORK/sharegate-jwt.toml" \
    2>"$WORK/sharegate-jwt.log" >&2 &
SGJ_PID=$!; PIDS+=("$SGJ_PID")

wait_port() { # port name: up to 10 s
    local i
    for i in $(seq 1 100); do
        if curl -s -o /dev/null "http://127.0.0.1:$1/healthcheck-probe"; then return 0; fi
        sleep 0.1
    done
    die "$2 did not come up on port $1"
}
wait_port "$UP_PORT" upstream
wait_port "$NGINX_PORT" nginx
wait_port "$HAP_PORT" haproxy
wait_port "$SG_PORT" sharegate
wait_port "$SGJ_PORT" sharegate-jwt

children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true; }
# A process group's members: nginx master + workers; haproxy and sharegate
# themselves (/proc/PID/stat sums all threads of a process).
members() { echo "$1"; children "$1"; }
ticks() { local t=0 p f; for p in "$@"; do read -r -a f <"/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo "$t"; }
status_kib() { local t=0 p v; for p in "${@:2}"; do v=$(awk -v k="$1:" '$1==k{print $2}' "/proc/$p/status"); t=$((t + v)); done; echo "$t"; }
reset_hwm() { local p; for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }

NGINX_MEMBERS=$(members "$NGINX_PID" | tr '\n' ' ')
HAP_MEMBERS=$(members "$HAP_PID" | tr '\n' ' ')
UP_MEMBERS=$(members "$UP_PID" | tr '\n' ' ')
# shellcheck disable=SC2086
{
    echo "sharegate_idle_rss_kib=$(status_kib VmRSS "$SG_PID")"
    echo "sharegate_jwt_idle_rss_kib=$(status_kib VmRSS "$SGJ_PID")"
    echo "nginx_idle_rss_kib=$(status_kib VmRSS $NGINX_MEMBERS)"
    echo "haproxy_idle_rss_kib=$(status_kib VmRSS $HAP_MEMBERS)"
    echo "haproxy_threads=$(ls /proc/"$HAP_PID"/task | wc -l)"
    echo "sharegate_threads=$(ls /proc/"$SG_PID"/task | wc -l)"
    echo "clk_tck=$(getconf CLK_TCK)"
    echo "rounds=$ROUNDS"
    echo "duration=$DURATION"
    echo "conns=$CONNS"
    echo "big_conns=$BIG_CONNS"
    echo "huge_mib=$HUGE_MIB"
    echo "logs=$LOGS"
    echo "nginx_version=$(nginx -v 2>&1 | sed 's/.*\///')"
    echo "haproxy_version=$(haproxy -v 2>&1 | awk 'NR==1{print $3}')"
    echo "wrk_version=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    echo "cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "loadavg_start=$(cut -d' ' -f1 /proc/loadavg)"
    sed 's/^\([a-z.]*\) /count_\1=/; s/\.json=/=/' "$WORK/counts.txt"
} >"$WORK/meta.txt"

# --- 4. does each proxy do the job? ----------------------------------------
fail=0
check() { # name port [curl args for identity]
    local name=$1 port=$2; shift 2
    local base="http://127.0.0.1:$port" code out="$WORK/out/check-$name"
    local want_big
    want_big=$(awk -F= '$1=="count_big"{print $2}' "$WORK/meta.txt")
    # haproxy cannot rewrite bodies (proxy-haproxy.cfg.in): its bodies must
    # come back as the upstream sent them, every public URL still there, so
    # the report's "no body rewrite" is checked and not assumed.
    local have=$PRIVATE lack=$PUBLIC how=rewritten
    [ "$name" = haproxy ] && { have=$PUBLIC; lack=$PRIVATE; how=untouched; }
    code=$(curl -sS "$@" -o "$out.small" -w '%{http_code}' "$base$SMALL")
    if [ "$code" != 200 ] || [ "$(grep -o "$have" "$out.small" | wc -l)" != 8 ] || grep -q "$lack" "$out.small"; then
        say "FAIL $name: small route not served or not $how (status $code)"; fail=1
    fi
    code=$(curl -sS "$@" -o "$out.big" -w '%{http_code}' "$base$BIG")
    if [ "$code" != 200 ] || [ "$(grep -o "$have" "$out.big" | wc -l)" != "$want_big" ] || grep -q "$lack" "$out.big"; then
        say "FAIL $name: 8 MiB body not served or not fully $how (status $code)"; fail=1
    fi
    code=$(curl -sS "$@" -X DELETE -o "$out.delete" -w '%{http_code}' "$base$SMALL")
    if [[ "$code" != 4* ]] || grep -q upstream-accepted-write "$out.delete"; then
        say "FAIL $name: DELETE on a share route was not refused (status $code)"; fail=1
    fi
    code=$(curl -sS "$@" --interface 127.0.0.2 -o "$out.outsider" -w '%{http_code}' "$base$SMALL")
    if [ "$code" != 403 ]; then
        say "FAIL $name: a client from 127.0.0.2 was not refused (status $code)"; fail=1
    fi
    local location
    location=$(curl -sS "$@" -o /dev/null -w '%{redirect_url}' "$base$REDIRECT")
    if [ "$location" != "$PRIVATE/public/$TOKEN/r" ]; then
        say "FAIL $name: Location not rewritten ($location)"; fail=1
    fi
    if [ "$fail" = 0 ]; then
        if [ "$name" = haproxy ]; then
            say "ok   $name: policy enforced and Location rewritten (bodies untouched: it cannot rewrite them)"
        else
            say "ok   $name: policy enforced and origins rewritten"
        fi
    fi
}
say "checking that each proxy does the job"
check nginx "$NGINX_PORT"
check haproxy "$HAP_PORT"
check sharegate "$SG_PORT"
check sharegate-jwt "$SGJ_PORT" -H "$JWT_HEADER: $TOKEN_JWT"
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SGJ_PORT$SMALL")
[ "$code" = 401 ] || { say "FAIL sharegate-jwt: a request without a token got $code, not 401"; fail=1; }
# The upstream directly must NOT do the job (it is the baseline, not a contender).
[ "$fail" = 0 ] || die "a proxy failed its checks; no measurements taken"

# --- 5. measurements --------------------------------------------------------
RESULTS=$WORK/results.tsv
printf 'scenario\ttarget\tround\twrk\tproxy_ticks\tupstream_ticks\tproxy_hwm_kib\n' >"$RESULTS"
measure() { # scenario target round port conns [wrk args...]
    local scenario=$1 target=$2 round=$3 port=$4 conns=$5; shift 5
    local members="" out="$WORK/out/wrk-$scenario-$target-$round.txt"
    case $target in
        nginx) members=$NGINX_MEMBERS ;;
        haproxy) members=$HAP_MEMBERS ;;
        sharegate) members=$SG_PID ;;
        sharegate-jwt) members=$SGJ_PID ;;
    esac
    local url="http://127.0.0.1:$port$SMALL"
    [ "$scenario" = rewrite_8MiB ] && url="http://127.0.0.1:$port$BIG"
    # shellcheck disable=SC2086
    [ -n "$members" ] && reset_hwm $members
    local p0 u0 p1 u1 hwm=-
    # shellcheck disable=SC2086
    { p0=$( [ -n "$members" ] && ticks $members || echo 0); u0=$(ticks $UP_MEMBERS); }
    taskset -c "$LOAD_CORE" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 10s --latency "$@" "$url" >"$out" 2>&1
    # shellcheck disable=SC2086
    { p1=$( [ -n "$members" ] && ticks $members || echo 0); u1=$(ticks $UP_MEMBERS); }
    # shellcheck disable=SC2086
    [ -n "$members" ] && hwm=$(status_kib VmHWM $members)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$round" "$out" \
        "$( [ -n "$members" ] && echo $((p1 - p0)) || echo -)" "$((u1 - u0))" "$hwm" >>"$RESULTS"
    say "  $scenario $target round $round: $(awk '/Requests\/sec/{print $2 " req/s"}' "$out")"
}
port_of() {
    case $1 in
        direct) echo "$UP_PORT" ;; nginx) echo "$NGINX_PORT" ;; haproxy) echo "$HAP_PORT" ;;
        sharegate) echo "$SG_PORT" ;;
    esac
}

say "measuring: $ROUNDS rounds x ${DURATION}s per run"
# Each target takes each place in turn (a full turn is four rounds), so none
# always runs first or last.
# haproxy is in the 8 MiB scenario too: without a rewrite it shows what
# plain forwarding of the body costs, the floor for the rewriting proxies.
orders=("direct nginx sharegate haproxy" "nginx sharegate haproxy direct"
    "sharegate haproxy direct nginx" "haproxy direct nginx sharegate")
for round in $(seq 1 "$ROUNDS"); do
    order=${orders[$(((round - 1) % 4))]}
    for t in $order; do measure small_2KiB "$t" "$round" "$(port_of "$t")" "$CONNS"; done
    measure small_2KiB sharegate-jwt "$round" "$SGJ_PORT" "$CONNS" -H "$JWT_HEADER: $TOKEN_JWT"
    for t in $order; do measure rewrite_8MiB "$t" "$round" "$(port_of "$t")" "$BIG_CONNS"; done
done

# Memory: idle after load, idle keep-alive connections, one huge body.
{
    echo "sharegate_after_load_rss_kib=$(status_kib VmRSS "$SG_PID")"
    for t in sharegate nginx; do
        port=$(port_of "$t")
        if [ "$t" = sharegate ]; then mem=$SG_PID; else mem=$NGINX_MEMBERS; fi
        # shellcheck disable=SC2086
        before=$(status_kib VmRSS $mem)
        stop="$WORK/stop-idle-$t"
        taskset -c "$LOAD_CORE" python3 "$HERE/idle_conns.py" 127.0.0.1 "$port" "$SMALL" "$IDLE_CONNS" 25 "$stop" \
            >"$WORK/out/idle-$t.txt" 2>&1 &
        client=$!
        for _ in $(seq 1 900); do # up to 90 s
            grep -q '^ready' "$WORK/out/idle-$t.txt" 2>/dev/null && break
            kill -0 "$client" 2>/dev/null || break
            sleep 0.1
        done
        # Held idle for 2 s before RSS is read (sharegate gives an idle
        # HTTP/1.1 connection's buffers back after 0.25-0.5 s quiet).
        sleep 2
        # shellcheck disable=SC2086
        with=$(status_kib VmRSS $mem)
        served=$(awk '/^ready/{print $2}' "$WORK/out/idle-$t.txt")
        touch "$stop"
        wait "$client" || true
        echo "${t}_idle_conns_before_kib=$before"
        echo "${t}_idle_conns_with_kib=$with"
        echo "${t}_idle_conns_served=${served:-0}"
        sleep 1
    done
    if [ "$HUGE_MIB" -gt 0 ]; then
        for t in sharegate nginx; do
            port=$(port_of "$t")
            if [ "$t" = sharegate ]; then mem=$SG_PID; else mem=$NGINX_MEMBERS; fi
            # shellcheck disable=SC2086
            { reset_hwm $mem; before=$(status_kib VmRSS $mem); }
            got=$(taskset -c "$LOAD_CORE" curl -sS --max-time 300 -o /dev/null \
                -w '%{http_code} %{size_download} %{time_total}' "http://127.0.0.1:$port$HUGE")
            # shellcheck disable=SC2086
            hwm=$(status_kib VmHWM $mem)
            echo "${t}_huge_before_kib=$before"
            echo "${t}_huge_hwm_kib=$hwm"
            echo "${t}_huge_result=${got// /,}"
        done
    fi
} >>"$WORK/meta.txt"

echo "loadavg_end=$(cut -d' ' -f1 /proc/loadavg)" >>"$WORK/meta.txt"
# Read at the end: the gateway's log lines reach the file in batches.
echo "sharegate_runtime=$(grep -o 'runtime started.*' "$WORK/sharegate.log" | head -n 1 | cut -d' ' -f3-)" >>"$WORK/meta.txt"

# --- 6. report ----------------------------------------------------------------
python3 "$HERE/report.py" "$WORK"
