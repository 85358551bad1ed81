#!/bin/bash
# runtime_callgrind.sh JOBS (BENCHMARKS.md part 29c): the instructions `recwatch status
# --json`, `status` and `check` execute when the JOBS watched jobs are the run-time
# list's (the database's `watchlist`, source `api`, as benches/memory.sh `runtime` writes it)
# with a `jobs` row each, counted by callgrind (the load does not change it). Every run-time
# entry's `added_at` and each row's times are read: what issue 24's `Timestamp` changed. BIN
# is the release binary, DIR where the files go (the database is made once per DIR and JOBS).
# Prints each command's total and keeps each command's output (DIR/out.COMMAND) to `cmp` two
# builds' outputs.
set -euo pipefail
jobs=$1; name=rt$jobs
BIN=${BIN:-target/release/recwatch}
DIR=${DIR:-/tmp/c24}
export DIR
"$(dirname "$0")"/mkconf.sh $name 0 9
if [ ! -f $DIR/$name.db ]; then
  # the schema, from the CLI's first write (it migrates an empty database)
  $BIN --config $DIR/$name.toml watch demo-app job-0000 > /dev/null 2>&1
  sqlite3 $DIR/$name.db "DELETE FROM watchlist;
   WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs - 1)
   INSERT INTO watchlist (app_id, job_id, source, added_at)
   SELECT 'demo-app', printf('job-%04d', i), 'api', '2026-12-07T00:00:00.000Z' FROM n;
   WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs - 1)
   INSERT OR REPLACE INTO jobs (app_id, job_id, state, description, snapshot, first_seen_at, last_polled_at, last_ok_at, last_changed_at)
   SELECT 'demo-app', printf('job-%04d', i), 'RUNNING', 'bench', '{\"job_id\":\"x\",\"state\":\"RUNNING\",\"description\":\"bench\"}',
   '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z' FROM n;"
fi
echo "entries: $(sqlite3 $DIR/$name.db 'select count(*) from watchlist'), load: $(cat /proc/loadavg)"
source "$(dirname "$0")/callgrind_status.sh"
