#!/usr/bin/env bash
# Issue 23, item 6, as the issue measures it, without building the bench harness: `recwatch
# run` as a process with the budget lifted (AK/SK, rate_limit 100000, max_in_flight 32, JOBS
# jobs at interval 100ms, the HTTP endpoint on) against `recwatch simulate --static`, then the
# official Python SDK's loop against the same simulator. Both counted by the simulator (the
# requests it answered) over SECONDS, the daemon's after its first pass. Prints polls/s, the
# SDK's req/s, their ratio and the load average (BENCHMARKS.md part 25d).
#
#   benches/throughput.sh [BIN] [JOBS] [SECONDS] [PYTHON]
#   benches/throughput.sh target/release/recwatch 10000 10 .venv-bench/bin/python
set -euo pipefail
bin=${1:-target/release/recwatch}
jobs=${2:-10000}
secs=${3:-10}
python=${4:-.venv-bench/bin/python}
here=$(cd "$(dirname "$0")" && pwd)
ak=BENCHAK0000000000000
sk=bench-secret-key
project=bench-project
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

RUST_LOG=warn "$bin" simulate --listen 127.0.0.1:0 --static --jobs "$jobs" \
    --access-key "$ak" --secret-key "$sk" >"$dir/sim.out" 2>"$dir/sim.err" &
pids+=($!)
for _ in $(seq 600); do grep -q http:// "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$dir/sim.out")
requests() { curl -sf "$url/_sim/stats" | jq .requests; }

{
    printf '[api]\nendpoint = "%s"\nproject_id = "%s"\nrate_limit = 100000\nmax_in_flight = 32\n' "$url" "$project"
    printf '[api.auth]\naccess_key = "%s"\nsecret_key = "%s"\n' "$ak" "$sk"
    printf '[storage]\npath = "%s/t.db"\n[http]\nlisten = "127.0.0.1:0"\n[poll]\ninterval = "100ms"\n' "$dir"
    for i in $(seq 0 $((jobs - 1))); do
        printf '[[jobs]]\napp_id = "demo-app"\njob_id = "job-%04d"\n' "$i"
    done
} >"$dir/config.toml"
RUST_LOG=warn "$bin" run --config "$dir/config.toml" >/dev/null 2>"$dir/daemon.err" &
daemon=$!
pids+=("$daemon")
until [ "$(requests)" -ge "$jobs" ]; do sleep 0.2; done
curl -sf -X POST "$url/_sim/reset-stats" >/dev/null
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
sleep "$secs"
n=$(requests)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
kill "$daemon"
wait "$daemon" 2>/dev/null || true
polls=$((n / secs))

sdk=$("$python" "$here/sdk_poll.py" "$url" "$ak" "$sk" "$project" demo-app "$jobs" "$secs")
sdk_rate=$(echo "$sdk" | jq .per_second)
sdk_errors=$(echo "$sdk" | jq .errors)
ratio=$(echo "$polls $sdk_rate" | awk '{printf "%.1f", $1 / $2}')
echo "recwatch run: $polls polls/s (load $load_before -> $load_after)"
echo "SDK loop: $(printf '%.0f' "$sdk_rate") req/s, $sdk_errors errors (load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "ratio: ${ratio}x (target 25x)"
