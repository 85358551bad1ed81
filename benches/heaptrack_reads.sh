#!/bin/bash
# BENCHMARKS.md part 27a: heaptrack the daemon of benches/reads.sh (a stored row per job),
# SIGKILL after the reads and a trim, so heaptrack's "leaked" is what was live then.
#   benches/heaptrack_reads.sh BIN JOBS PORT OUT_DIR
# then: heaptrack_print -f OUT_DIR/ht.zst --print-leaks 1
BIN=$1; jobs=$2; port=$3; out=$4
export DIR=$out; mkdir -p $DIR; name=r$jobs
cd "$(dirname "$0")/.."
benches/mkconf.sh $name $jobs $port
rm -f $DIR/$name.db*
$BIN --config $DIR/$name.toml status >/dev/null 2>&1
timeout 20 $BIN run --config $DIR/$name.toml >/dev/null 2>&1 &
sleep 8; kill -INT $! ; wait
sqlite3 $DIR/$name.db "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs - 1)
 INSERT OR REPLACE INTO jobs (app_id, job_id, state, description, snapshot, first_seen_at, last_polled_at, last_ok_at, last_changed_at)
 SELECT 'demo-app', printf('job-%04d', i), 'RUNNING', 'bench', '{\"job_id\":\"x\",\"state\":\"RUNNING\",\"description\":\"bench\"}',
 '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z' FROM n;"
$BIN simulate --static --jobs $jobs --rate-limit 10 --listen 127.0.0.1:$port > $DIR/sim.log 2>&1 &
sim=$!
sleep 2
echo "load before: $(cat /proc/loadavg)"
RUST_LOG=warn,recwatch=info heaptrack -o $DIR/ht $BIN run --config $DIR/$name.toml > $DIR/run.log 2>&1 &
for i in $(seq 1 600); do grep -q "recwatch running" $DIR/run.log && break; sleep 0.5; done
pid=$(pgrep -f "run --config $DIR/$name.toml" | while read p; do [ "$(readlink /proc/$p/exe)" != /usr/bin/bash ] && grep -q libheaptrack /proc/$p/maps 2>/dev/null && echo $p; done | head -1)
addr=$(grep 'HTTP endpoint' $DIR/run.log | grep -o 'address=[0-9.:]*' | head -1 | cut -d= -f2)
echo "pid=$pid addr=$addr at start: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \n' ' ')"
sleep 40
echo "before reads: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \n' ' ')"
for what in "/" "/api/v1/jobs"; do for i in $(seq 1 12); do curl -s -o /dev/null "http://$addr$what"; done; done
echo "after reads: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \n' ' ')"
sleep 35
echo "after a trim: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \n' ' ') load $(cat /proc/loadavg)"
kill -9 $pid; sleep 3; kill $sim; wait
