#!/usr/bin/env bash
# Part 32i (issue 23, item 1's CPU): what `recwatch run` costs at the default budget
# (rate_limit 10, interval 30s) with JOBS jobs from the TOML file, against `recwatch simulate
# --static`, measured over SECS after WARM seconds of polling. In the first JOBS / 10 seconds
# every poll is a job's first sight (`-` -> RUNNING: a transition written), part 3's setup.
#
#   benches/cpu10.sh BIN [JOBS] [WARM] [SECS]
#   benches/cpu10.sh target/release/recwatch 10000 90 30
#
# Prints the requests the simulator answered in the window, the daemon's user and system CPU
# (/proc/PID/stat) as a share of one core and per request, its context switches (`perf stat`)
# and the load. Each of these
# replaces the plain run (one at a time, since each changes what it observes):
#   STRACE=1     `strace -c -f` on the daemon for the window: system calls per request;
#   STATEMENTS=1 the daemon with `sqlx::query=debug`: statements per request, by kind;
#   PERF=1       `perf record -g` on the daemon for the window (where its CPU goes, KEEP=1 to
#                keep the directory and read it with `perf report -i DIR/perf.data`;
#                PERF_EVENT=sched:sched_switch for where its threads go to sleep);
#   CALLGRIND=1  the daemon under `valgrind --tool=callgrind`, its counters zeroed at the start
#                of the window and dumped at its end: instructions per request (the load does
#                not change them; callgrind's daemon is slower, so it answers fewer).
set -euo pipefail
bin=$1; jobs=${2:-10000}; warm=${3:-90}; secs=${4:-30}
ak=BENCHAK0000000000000; sk=bench-secret-key
dir=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"; }
trap cleanup EXIT
RUST_LOG=warn "$bin" simulate --listen 127.0.0.1:0 --static --jobs "$jobs" --rate-limit 10 \
  --access-key "$ak" --secret-key "$sk" >"$dir/sim.out" 2>"$dir/sim.err" &
sim=$!; pids+=($sim)
for _ in $(seq 600); do grep -q http:// "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$dir/sim.out")
{
  printf '[api]\nendpoint = "%s"\nproject_id = "bench-project"\n' "$url"
  printf '[api.auth]\naccess_key = "%s"\nsecret_key = "%s"\n' "$ak" "$sk"
  printf '[storage]\npath = "%s/t.db"\n[http]\nlisten = "127.0.0.1:0"\n' "$dir"
  awk -v n="$jobs" 'BEGIN { for (i = 0; i < n; i++) printf "[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-%04d\"\n", i }'
} >"$dir/config.toml"
log=warn,recwatch=info
[ -n "${STATEMENTS:-}" ] && log=$log,sqlx::query=debug
pre=()
[ -n "${CALLGRIND:-}" ] && pre=(valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" --collect-atstart=no)
RUST_LOG=$log "${pre[@]}" "$bin" run --config "$dir/config.toml" >"$dir/run.log" 2>&1 &
daemon=$!; pids+=($daemon)
[ -n "${CALLGRIND:-}" ] && { sleep 1; daemon=$(pgrep -P $daemon || echo $daemon); }
requests() { curl -sf "$url/_sim/stats" | jq .requests; }
for _ in $(seq 3000); do grep -q "recwatch running" "$dir/run.log" && break; sleep 0.2; done
sleep "$warm"
[ -n "${CALLGRIND:-}" ] && callgrind_control -i on $daemon >/dev/null
curl -sf -X POST "$url/_sim/reset-stats" >/dev/null
lines0=$(wc -l <"$dir/run.log")
t0=$(awk '{print $14 + $15}' /proc/$daemon/stat); load0=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "${STRACE:-}" ]; then
  timeout -s INT "$secs" strace -c -f -p $daemon -o "$dir/strace" 2>/dev/null || true
elif [ -n "${PERF:-}" ]; then
  perf record -q ${PERF_EVENT:+-e $PERF_EVENT} -F 499 -g -p $daemon -o "$dir/perf.data" -- sleep "$secs" 2>/dev/null
else
  perf stat -e context-switches -p $daemon -o "$dir/pstat" -- sleep "$secs" 2>/dev/null || sleep "$secs"
fi
n=$(requests)
t1=$(awk '{print $14 + $15}' /proc/$daemon/stat)
[ -n "${CALLGRIND:-}" ] && { callgrind_control -d $daemon >/dev/null; callgrind_control -i off $daemon >/dev/null; }
hz=$(getconf CLK_TCK)
echo "# $(basename "$bin") ($("$bin" --version 2>/dev/null | head -1)), $jobs jobs, window ${secs}s after ${warm}s"
echo "# load before: $load0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v n="$n" -v c="$((t1 - t0))" -v hz="$hz" -v s="$secs" \
  'BEGIN { printf "requests %d (%.2f/s); daemon CPU %.2f s = %.2f %% of a core, %.0f us a request\n", n, n / s, c / hz, 100 * c / hz / s, 1e6 * c / hz / n }'
if [ -f "$dir/pstat" ]; then
  awk -v n="$n" '/context-switches/ { gsub(",", "", $1); printf "context switches %d, %.1f a request\n", $1, $1 / n }' "$dir/pstat"
fi
if [ -n "${STRACE:-}" ]; then
  awk -v n="$n" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ { printf "  %-16s %8d  %6.2f a request\n", $NF, $4, $4 / n }' "$dir/strace" | sort -k2 -nr | head -15
  awk -v n="$n" '$NF == "total" { printf "  %-16s %8d  %6.2f a request\n", "total", $4, $4 / n }' "$dir/strace"
fi
if [ -n "${STATEMENTS:-}" ]; then
  tail -n +$((lines0 + 1)) "$dir/run.log" | grep 'sqlx::query' | sed -E 's/.*summary="([^"]*)".*/\1/' \
    | sort | uniq -c | sort -nr | awk -v n="$n" '{ c = $1; $1 = ""; printf "  %6d  %5.2f a request %s\n", c, c / n, $0 } { t += c } END { printf "  %6d  %5.2f a request  (all)\n", t, t / n }'
fi
if [ -n "${PERF:-}" ]; then
  perf report -i "$dir/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -40
  echo "kept: $dir"
fi
if [ -n "${CALLGRIND:-}" ]; then
  f=$(ls -t "$dir"/cg.out* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  echo "instructions $ir, $((ir / n)) a request ($f)"
  [ -n "${KEEP:-}" ] && echo "kept: $dir"
fi
