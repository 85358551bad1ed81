#!/bin/bash
# status_ab.sh A B CONFIG [N] (BENCHMARKS.md part 27b): `status --json` and `status` of the
# binaries A and B on the same configuration and database, N runs each (7 by default),
# interleaved (A, B, A, B ...) so that both see the same load; prints each one's min / median
# / max wall-clock time and its largest max RSS. CONFIG is a file reads.sh or
# reads_callgrind.sh made (its database filled); run it with no daemon on that database.
set -euo pipefail
A=$1; B=$2; C=$3; N=${4:-7}
t=$(mktemp -d)
for args in "status --json" "status"; do
  : > $t/a; : > $t/b
  for i in $(seq 1 $N); do
    /usr/bin/time -f "%e %M" $A --config $C $args 2>&1 >/dev/null | tail -1 >> $t/a
    /usr/bin/time -f "%e %M" $B --config $C $args 2>&1 >/dev/null | tail -1 >> $t/b
  done
  for w in a b; do
    echo "$args [$w]: $(sort -n $t/$w | awk '{a[NR]=$1; if ($2>m) m=$2} END {printf "min %.0f / median %.0f / max %.0f ms, max RSS %.1f MiB", a[1]*1000, a[int((NR+1)/2)]*1000, a[NR]*1000, m/1024}')"
  done
done
rm -r $t
