#!/bin/bash
# page_callgrind.sh JOBS (BENCHMARKS.md part 25c): the instructions the daemon executes to
# answer `/` and `/api/v1/jobs` at JOBS jobs, counted by callgrind (the machine's load does
# not change them). Uses reads_callgrind.sh's files (run it first, same BIN, DIR and JOBS):
# `recwatch run` under callgrind with counting off, the first request of each address
# answered outside the count (it builds the watch list's counts), then N (default 10)
# requests of each counted, and the same time with no request (the daemon's own polls and
# housekeeping, to subtract).
set -euo pipefail
jobs=$1; n=${N:-10}; name=cg$jobs
BIN=${BIN:-target/release/recwatch}
DIR=${DIR:-/tmp/c23}
out=$DIR/page
rm -rf $out; mkdir -p $out
RUST_LOG=warn,recwatch=info valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file=$out/cg.%p $BIN run --config $DIR/$name.toml > $out/run.log 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait' EXIT
for i in $(seq 1 1200); do grep -q "recwatch running" $out/run.log && break; sleep 0.5; done
addr=$(grep 'HTTP endpoint' $out/run.log | grep -o 'address=[0-9.:]*' | head -1 | cut -d= -f2)
echo "addr=$addr load: $(cat /proc/loadavg)"
for what in / /api/v1/jobs; do curl -s -o /dev/null "http://$addr$what"; done
count() { # count NAME COMMAND...: instructions while COMMAND runs
  local tag=$1; shift
  callgrind_control -z $pid >/dev/null
  callgrind_control -i on $pid >/dev/null
  local t0=$(date +%s.%N)
  "$@"
  local t1=$(date +%s.%N)
  callgrind_control -i off $pid >/dev/null
  callgrind_control -d $tag $pid >/dev/null
  local f=$(ls -t $out/cg.$pid* | head -1)
  echo "$tag: $(grep -h '^totals:' $f | awk '{print $2}') instructions in $(echo "$t1 - $t0" | bc) s"
}
for what in / /api/v1/jobs; do
  count "$what x$n" bash -c "for i in \$(seq 1 $n); do curl -s -o /dev/null http://$addr$what; done"
done
count "no request, 20 s" sleep 20
