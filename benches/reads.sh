#!/bin/bash
# reads.sh JOBS PORT (BENCHMARKS.md parts 19 and 22): a database with a row for each of JOBS
# jobs (as after a round of polls), `recwatch run` watching them (TOML) against the simulator;
# then the reads, timed: `/` and `/api/v1/jobs` (12 each), `status`, `status --json` and
# `check` (5 each, /usr/bin/time), and the daemon's VmRSS / VmHWM after them. BIN is the
# release binary, DIR where the files go; `status --json`'s output is kept in DIR/readsJOBS.json
# (to `cmp` two builds).
jobs=$1; port=$2; name=reads$jobs
BIN=${BIN:-target/release/recwatch}
DIR=${DIR:-/tmp/m23}
export DIR
"$(dirname "$0")"/mkconf.sh $name $jobs $port
rm -f $DIR/$name.db*
# the schema, from a first start
$BIN --config $DIR/$name.toml status >/dev/null 2>&1
timeout 20 $BIN run --config $DIR/$name.toml >/dev/null 2>&1 &
sleep 8; kill -INT $! ; wait
sqlite3 $DIR/$name.db "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs - 1)
 INSERT OR REPLACE INTO jobs (app_id, job_id, state, description, snapshot, first_seen_at, last_polled_at, last_ok_at, last_changed_at)
 SELECT 'demo-app', printf('job-%04d', i), 'RUNNING', 'bench', '{\"job_id\":\"x\",\"state\":\"RUNNING\",\"description\":\"bench\"}',
 '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z' FROM n;"
echo "rows: $(sqlite3 $DIR/$name.db 'select count(*) from jobs')"
$BIN simulate --static --jobs $jobs --rate-limit 10 --listen 127.0.0.1:$port > $DIR/$name.sim.log 2>&1 &
sim=$!
sleep 2
echo "load before: $(cat /proc/loadavg)"
RUST_LOG=warn,recwatch=info $BIN run --config $DIR/$name.toml > $DIR/$name.run.log 2>&1 &
pid=$!
for i in $(seq 1 600); do grep -q "recwatch running" $DIR/$name.run.log && break; sleep 0.5; done
addr=$(grep 'HTTP endpoint' $DIR/$name.run.log | grep -o 'address=[0-9.:]*' | head -1 | cut -d= -f2)
echo "addr=$addr"
echo "daemon at start: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \n' ' ')"
sleep 10
echo "load during: $(cat /proc/loadavg)"
for what in "/" "/api/v1/jobs"; do
  for i in $(seq 1 12); do curl -s -o /dev/null -w "%{time_total} %{size_download}\n" "http://$addr$what"; done > $DIR/$name.t.txt
  echo "$what: $(sort -n $DIR/$name.t.txt | awk '{a[NR]=$1; s=$2} END {printf "min %.1f ms median %.1f ms max %.1f ms, %d bytes", a[1]*1000, a[int((NR+1)/2)]*1000, a[NR]*1000, s}')"
done
for args in "status" "status --json" "check"; do
  for i in $(seq 1 5); do /usr/bin/time -f "%e %M" $BIN --config $DIR/$name.toml $args 2>&1 >/dev/null | tail -1; done > $DIR/$name.s.txt
  echo "$args: $(sort -n $DIR/$name.s.txt | awk '{a[NR]=$1; if ($2 > m) m=$2} END {printf "min %.0f ms median %.0f ms max %.0f ms, max RSS %d KiB", a[1]*1000, a[int((NR+1)/2)]*1000, a[NR]*1000, m}')"
done
$BIN --config $DIR/$name.toml status --json > $DIR/$name.json
python3 -c "import json,sys; v=json.load(open(sys.argv[1])); print('status --json:', len(v), 'jobs,', len(set((r['app_id'],r['job_id']) for r in v)), 'distinct')" $DIR/$name.json
echo "daemon: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \n' ' ')"
echo "load after: $(cat /proc/loadavg)"
kill -INT $pid; sleep 3; kill $sim; wait
