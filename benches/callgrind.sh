#!/usr/bin/env bash
# Instructions per request: a count that the machine's load does not change, to compare
# builds on a shared machine (issue 23, item 6; BENCHMARKS.md part 24). `recwatch run` polls
# `recwatch simulate --static` with the budget lifted (AK/SK, rate_limit 100000,
# max_in_flight 32, interval 100ms), one of the two under callgrind, the other at full speed.
# After the warm-up passes, callgrind counts for SECONDS while the simulator counts the requests
# it answered; the script prints instructions per request of the one measured.
#
#   benches/callgrind.sh sim|daemon [BIN] [JOBS] [SECONDS]
#   benches/callgrind.sh sim target/release/recwatch 1000 20
#   KEEP=1 benches/callgrind.sh ...   # keeps the callgrind output (callgrind_annotate it)
#   HTTP_LISTEN=127.0.0.1:0 benches/callgrind.sh daemon ...   # with the HTTP endpoint (/metrics) on
#   WARM=1 benches/callgrind.sh ...   # count from the end of the first pass, as part 24 did
set -euo pipefail
which=${1:?sim or daemon}
bin=${2:-target/release/recwatch}
jobs=${3:-1000}
secs=${4:-20}
ak=BENCHAK0000000000000
sk=bench-secret-key
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

cg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.%p")
sim_cmd=("$bin" simulate --listen 127.0.0.1:0 --static --jobs "$jobs" --access-key "$ak" --secret-key "$sk")
[ "$which" = sim ] && sim_cmd=("${cg[@]}" "${sim_cmd[@]}")
RUST_LOG=warn "${sim_cmd[@]}" >"$dir/sim.out" 2>"$dir/sim.err" &
sim_pid=$!
pids+=("$sim_pid")
for _ in $(seq 600); do grep -q http:// "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$dir/sim.out")

{
    printf '[api]\nendpoint = "%s"\nproject_id = "bench-project"\nrate_limit = 100000\nmax_in_flight = 32\n' "$url"
    printf '[api.auth]\naccess_key = "%s"\nsecret_key = "%s"\n' "$ak" "$sk"
    printf '[storage]\npath = "%s/cg.db"\n[http]\nlisten = "%s"\n[poll]\ninterval = "100ms"\n' "$dir" "${HTTP_LISTEN:-}"
    for i in $(seq 0 $((jobs - 1))); do
        printf '[[jobs]]\napp_id = "demo-app"\njob_id = "job-%04d"\n' "$i"
    done
} >"$dir/config.toml"
daemon_cmd=("$bin" run --config "$dir/config.toml")
[ "$which" = daemon ] && daemon_cmd=("${cg[@]}" "${daemon_cmd[@]}")
RUST_LOG=warn "${daemon_cmd[@]}" >/dev/null 2>"$dir/daemon.err" &
daemon_pid=$!
pids+=("$daemon_pid")

requests() { curl -sf "$url/_sim/stats" | jq .requests; }
# Counting starts after WARM passes (default 3), not after the first: the first pass writes a
# transition per job, and on a busy machine the writer is still at it when the first pass's
# requests are answered, a fixed cost that lands in the count and weighs more the fewer polls
# the run makes (BENCHMARKS.md part 25d).
until [ "$(requests)" -ge $((jobs * ${WARM:-3})) ]; do sleep 0.5; done
target=$sim_pid
[ "$which" = daemon ] && target=$daemon_pid
callgrind_control -i on "$target" >/dev/null 2>&1
curl -sf -X POST "$url/_sim/reset-stats" >/dev/null
sleep "$secs"
n=$(requests)
callgrind_control -d "$target" >/dev/null 2>&1
callgrind_control -i off "$target" >/dev/null 2>&1
ir=$(grep -h '^totals:' "$dir"/cg.* | awk '{s += $2} END {printf "%.0f", s}')
echo "$which: $ir instructions over $n requests: $((ir / n)) per request ($jobs jobs, ${secs}s, $(cat /proc/loadavg))"
