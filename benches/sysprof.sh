#!/usr/bin/env bash
# Per poll, the daemon and the simulator apart: system calls, context switches (perf stat) and
# user and system CPU (/proc/PID/stat), over SECS after the daemon's second pass, with
# benches/throughput.sh's setup (AK/SK, rate_limit 100000, max_in_flight 32, JOBS jobs at
# interval 100ms). What callgrind does not count: the kernel's and the scheduler's share
# (BENCHMARKS.md part 27d). Needs perf with tracepoints (root). STRACE=1 adds `strace -c -f`
# on each process for 3 s.
#
#   benches/sysprof.sh BIN [JOBS] [SECS]
#   benches/sysprof.sh target/release/recwatch 10000 5
set -euo pipefail
bin=$1; jobs=${2:-10000}; secs=${3:-5}
ak=BENCHAK0000000000000; sk=bench-secret-key
dir=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
RUST_LOG=warn "$bin" simulate --listen 127.0.0.1:0 --static --jobs "$jobs" --access-key "$ak" --secret-key "$sk" >"$dir/sim.out" 2>"$dir/sim.err" &
sim=$!; pids+=($sim)
for _ in $(seq 600); do grep -q http:// "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$dir/sim.out")
{
  printf '[api]\nendpoint = "%s"\nproject_id = "bench-project"\nrate_limit = 100000\nmax_in_flight = 32\n' "$url"
  printf '[api.auth]\naccess_key = "%s"\nsecret_key = "%s"\n' "$ak" "$sk"
  printf '[storage]\npath = "%s/t.db"\n[http]\nlisten = "127.0.0.1:0"\n[poll]\ninterval = "100ms"\n' "$dir"
  for i in $(seq 0 $((jobs - 1))); do printf '[[jobs]]\napp_id = "demo-app"\njob_id = "job-%04d"\n' "$i"; done
} >"$dir/config.toml"
RUST_LOG=warn "$bin" run --config "$dir/config.toml" >/dev/null 2>"$dir/daemon.err" &
daemon=$!; pids+=($daemon)
requests() { curl -sf "$url/_sim/stats" | jq .requests; }
until [ "$(requests)" -ge $((jobs * 2)) ]; do sleep 0.2; done
echo "threads: daemon $(ls /proc/$daemon/task | wc -l), sim $(ls /proc/$sim/task | wc -l)"
ev='raw_syscalls:sys_enter,context-switches,task-clock'
curl -sf -X POST "$url/_sim/reset-stats" >/dev/null
perf stat -e "$ev" -p $daemon -o "$dir/pd" -- sleep "$secs" &
p1=$!
perf stat -e "$ev" -p $sim -o "$dir/ps" -- sleep "$secs" &
p2=$!
sd0=$(awk '{print $14, $15}' /proc/$daemon/stat); ss0=$(awk '{print $14, $15}' /proc/$sim/stat)
wait $p1 $p2
n=$(requests)
sd1=$(awk '{print $14, $15}' /proc/$daemon/stat); ss1=$(awk '{print $14, $15}' /proc/$sim/stat)
echo "requests $n in ${secs}s: $((n / secs))/s, load $(cat /proc/loadavg)"
for w in d s; do
  if [ $w = d ]; then a=($sd0); b=($sd1); f=$dir/pd; name=daemon; else a=($ss0); b=($ss1); f=$dir/ps; name=sim; fi
  u=$(( (b[0]-a[0]) )); s=$(( (b[1]-a[1]) ))
  sys=$(grep raw_syscalls "$f" | awk '{gsub(",","",$1); print $1}')
  cs=$(grep context-switches "$f" | awk '{gsub(",","",$1); print $1}')
  awk -v n=$n -v u=$u -v s=$s -v sys=$sys -v cs=$cs -v name=$name 'BEGIN{printf "%s: user %.1f us/poll, sys %.1f us/poll, %.2f syscalls/poll, %.2f ctx switches/poll\n", name, u*10000/n, s*10000/n, sys/n, cs/n}'
done
if [ -n "${STRACE:-}" ]; then
  timeout 3 strace -c -f -p $daemon -o "$dir/sd" 2>/dev/null || true
  timeout 3 strace -c -f -p $sim -o "$dir/ss" 2>/dev/null || true
  echo "daemon:"; head -20 "$dir/sd"; echo "sim:"; head -20 "$dir/ss"
fi
