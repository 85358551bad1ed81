#!/bin/bash
# reads_callgrind.sh JOBS (BENCHMARKS.md part 25b): the instructions `recwatch status`,
# `status --json` and `check` execute at JOBS jobs (JOBS [[jobs]] from mkconf.sh, a `jobs`
# row for each as reads.sh writes them), counted by callgrind, which the machine's load does
# not change. BIN is the release binary, DIR where the files go (the database is made once
# per DIR and JOBS; delete it to start again). Prints each command's total and keeps the
# callgrind files (DIR/cg.COMMAND.out) for callgrind_annotate, and each command's output
# (DIR/out.COMMAND) to `cmp` two builds. Each thread is counted apart (`status` reads the
# jobs' rows on a second thread while the configuration's jobs are read, part 27b): the line
# gives the total and each thread's count, the main thread first.
set -euo pipefail
jobs=$1; name=cg$jobs
BIN=${BIN:-target/release/recwatch}
DIR=${DIR:-/tmp/c23}
export DIR
"$(dirname "$0")"/mkconf.sh $name $jobs 9
if [ ! -f $DIR/$name.db ]; then
  # the schema, from a first start (nothing answers on port 9: every poll fails, no matter)
  timeout 20 $BIN run --config $DIR/$name.toml >/dev/null 2>&1 &
  sleep 8; kill -INT $! ; wait || true
  sqlite3 $DIR/$name.db "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs - 1)
   INSERT OR REPLACE INTO jobs (app_id, job_id, state, description, snapshot, first_seen_at, last_polled_at, last_ok_at, last_changed_at)
   SELECT 'demo-app', printf('job-%04d', i), 'RUNNING', 'bench', '{\"job_id\":\"x\",\"state\":\"RUNNING\",\"description\":\"bench\"}',
   '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z' FROM n;"
fi
echo "rows: $(sqlite3 $DIR/$name.db 'select count(*) from jobs'), load: $(cat /proc/loadavg)"
source "$(dirname "$0")/callgrind_status.sh"
