#!/bin/bash
# Part 21 (issue 23, item 1): `recwatch run`'s RSS and VmHWM with N watched jobs, read from
# /proc/PID/status every 5 s, against `recwatch simulate --static --jobs N --rate-limit 10`.
#
#   benches/memory.sh SOURCE JOBS [SECONDS] [PORT]
#
# SOURCE: `toml` (N `[[jobs]]` in the config file), `runtime` (no `[[jobs]]`; the N jobs in
# the database's run-time watch list, source `api`, inserted with sqlite3 before the start) or
# `discover` (part 25a: N `[[jobs]]` and a discovering app; DISCOVER more jobs, 50,000 unless
# set, announced by signed callbacks (benches/discover_send.py) spread over DISCOVER_SECONDS,
# 60 unless set, starting STORM_AT seconds, 20 unless set, after the daemon started).
# SECONDS (default 120) after "recwatch running"; PORT (default 18080) the simulator's.
# BIN: the release binary (default target/release/recwatch); OUT: a directory for the files
# (default /tmp/recwatch-memory). Prints one line per sample: t (s after the daemon started),
# VmRSS and VmHWM in MiB, the daemon's CPU time so far (user + system), the load average; the
# daemon's defaults are kept (rate_limit 10, interval 30s).
set -euo pipefail
source=$1; jobs=$2; seconds=${3:-120}; port=${4:-18080}
BIN=${BIN:-target/release/recwatch}
OUT=${OUT:-/tmp/recwatch-memory}
mkdir -p "$OUT"
name=$source$jobs
conf=$OUT/$name.toml; db=$OUT/$name.db
rm -f "$db" "$db-wal" "$db-shm"
cat > "$conf" <<EOF
[api]
endpoint = "http://127.0.0.1:$port"
project_id = "bench-project"
[api.auth]
access_key = "BENCHAK0000000000000"
secret_key = "bench-secret-key"
[storage]
path = "$db"
[http]
listen = "127.0.0.1:0"
EOF
DISCOVER=${DISCOVER:-50000}; DISCOVER_SECONDS=${DISCOVER_SECONDS:-60}; STORM_AT=${STORM_AT:-20}
KEY=bench-callback-key-0123456789abcdef
simjobs=$jobs
case $source in
toml)
    awk -v n="$jobs" 'BEGIN { for (i = 0; i < n; i++) printf "[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-%04d\"\n", i }' >> "$conf"
    ;;
runtime)
    # the schema, from the CLI's first write (it migrates an empty database); that entry is
    # replaced by the N below
    "$BIN" --config "$conf" watch demo-app job-0000 > /dev/null 2>&1
    sqlite3 "$db" "DELETE FROM watchlist; WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs - 1)
      INSERT INTO watchlist (app_id, job_id, source, added_at)
      SELECT 'demo-app', printf('job-%04d', i), 'api', '2026-12-07T00:00:00.000Z' FROM n;"
    ;;
discover)
    simjobs=$((jobs + DISCOVER))
    cat >> "$conf" <<EOF
[callback]
listen = "127.0.0.1:0"
[[apps]]
app_id = "demo-app"
auth_key = "$KEY"
discover = true
max_discovered = 1000000
EOF
    awk -v n="$jobs" 'BEGIN { for (i = 0; i < n; i++) printf "[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-%04d\"\n", i }' >> "$conf"
    ;;
*) echo "SOURCE is toml, runtime or discover" >&2; exit 2 ;;
esac
"$BIN" simulate --static --jobs "$simjobs" --rate-limit 10 --listen "127.0.0.1:$port" > "$OUT/$name.sim.log" 2>&1 &
sim=$!
storm=
trap 'kill -INT $pid 2>/dev/null; kill $sim $storm 2>/dev/null; wait' EXIT
sleep 2
RUST_LOG=warn,recwatch=info "$BIN" run --config "$conf" > "$OUT/$name.run.log" 2>&1 &
pid=$!
start=$(date +%s.%N)
echo "# $source $jobs jobs, $(git rev-parse --short HEAD 2>/dev/null || echo '?'), BIN=$BIN"
echo "# load before: $(cat /proc/loadavg)"
for _ in $(seq 1 1200); do grep -q "recwatch running" "$OUT/$name.run.log" && break; sleep 0.5; done
echo "# running after $(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.1f') s"
end=$(echo "$start + $seconds" | bc)
if [ "$source" = discover ]; then
    address=$(grep -m1 "callback receiver: POST" "$OUT/$name.run.log" | sed -E 's/.*address=([^ ]+).*/\1/')
    ( sleep "$(echo "$start + $STORM_AT - $(date +%s.%N)" | bc | awk '{ print ($1 > 0 ? $1 : 0) }')"
      echo "# storm of $DISCOVER discoveries over $DISCOVER_SECONDS s starts at t=$STORM_AT s (load $(cut -d' ' -f1-3 /proc/loadavg))"
      python3 "$(dirname "$0")/discover_send.py" "http://$address/rtc/record-callback" "$KEY" demo-app "$jobs" "$DISCOVER" "$DISCOVER_SECONDS"
      printf '# storm over at t=%.1f s\n' "$(echo "$(date +%s.%N) - $start" | bc)"
      echo "# watched: $(sqlite3 "$db" 'SELECT COUNT(*) FROM watchlist') run-time entries" ) &
    storm=$!
fi
while :; do
    now=$(date +%s.%N)
    kill -0 $pid 2>/dev/null || { echo "# the daemon exited"; tail -5 "$OUT/$name.run.log"; exit 1; }
    # the daemon's CPU so far (user + system, from /proc/PID/stat), in seconds
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$pid/stat")
    awk -v t="$(echo "$now - $start" | bc)" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" -v cpu="$cpu" \
        '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { printf "t=%5.1f s  RSS %7.1f MiB  VmHWM %7.1f MiB  cpu %6.2f s  load %s\n", t, r / 1024, h / 1024, cpu, load }' \
        "/proc/$pid/status"
    [ "$(echo "$now > $end" | bc)" = 1 ] && break
    sleep 5
done
echo "# load after: $(cat /proc/loadavg)"
