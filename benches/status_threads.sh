#!/bin/bash
# status_threads.sh BIN CONFIG [N] (BENCHMARKS.md part 32h): the CPU time each thread of
# `status --json` and of `status` takes, user and kernel (page faults, reads) together, from
# perf's task-clock samples (one per 100 us of CPU a thread runs; time spent waiting for a
# core is not counted, so the figures move little with the machine's load, unlike the wall
# clock). Callgrind counts instructions but no kernel time: at 100,000 jobs the kernel's
# share (pages handed over and zeroed) was a third of `status`. N runs each (3 by default);
# threads under 5 ms (tokio's, sqlx's) are left out. Needs perf and permission to use it
# (root, or kernel.perf_event_paranoid <= 2). Run it with no daemon on that database.
set -euo pipefail
BIN=$1; C=$2; N=${3:-3}
data=$(mktemp)
for args in "status --json" "status"; do
  for i in $(seq 1 $N); do
    perf record -q -e task-clock -c 100000 -o $data $BIN --config $C $args >/dev/null 2>&1
    echo "$args: $(perf script -i $data -F tid,ip 2>/dev/null | awk '
      { if (!($1 in n)) order[++k] = $1; n[$1]++; if ($2 ~ /^ffff/) kern[$1]++ }
      END { for (i = 1; i <= k; i++) { t = order[i]; if (n[t] >= 50) printf "%s%.1f ms (kernel %.1f)", sep, n[t] / 10, kern[t] / 10; if (n[t] >= 50) sep = " + " } }')"
  done
done
rm -f $data
