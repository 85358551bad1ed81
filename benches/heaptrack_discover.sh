#!/bin/bash
# BENCHMARKS.md part 27a: heaptrack the daemon of benches/memory.sh discover (N [[jobs]] + D
# discovered as fast as possible); SIGKILL 35 s after the storm (after a trim), so heaptrack's
# "leaked" is what was live then.
#   benches/heaptrack_discover.sh BIN N D PORT OUT_DIR
# then: heaptrack_print -f OUT_DIR/ht.zst --print-leaks 1
BIN=$1; jobs=$2; D=$3; port=$4; out=$5
OUT=$out; mkdir -p $OUT; conf=$OUT/c.toml; db=$OUT/c.db; rm -f $db*
KEY=bench-callback-key-0123456789abcdef
cat > $conf <<EOT
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
[callback]
listen = "127.0.0.1:0"
[[apps]]
app_id = "demo-app"
auth_key = "$KEY"
discover = true
max_discovered = 1000000
EOT
awk -v n="$jobs" 'BEGIN { for (i = 0; i < n; i++) printf "[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-%04d\"\n", i }' >> $conf
$BIN simulate --static --jobs $((jobs + D)) --rate-limit 10 --listen 127.0.0.1:$port > $OUT/sim.log 2>&1 &
sim=$!
sleep 2
RUST_LOG=warn,recwatch=info heaptrack -o $OUT/ht $BIN run --config $conf > $OUT/run.log 2>&1 &
for i in $(seq 1 600); do grep -q "recwatch running" $OUT/run.log && break; sleep 0.5; done
pid=$(pgrep -f "run --config $conf" | while read p; do grep -q libheaptrack /proc/$p/maps 2>/dev/null && echo $p; done | head -1)
address=$(grep -m1 "callback receiver: POST" $OUT/run.log | sed -E 's/.*address=([^ ]+).*/\1/')
echo "pid=$pid load $(cat /proc/loadavg)"
sleep 10
python3 "$(dirname "$0")/discover_send.py" "http://$address/rtc/record-callback" "$KEY" demo-app "$jobs" "$D" 0
echo "storm over: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \n' ' ')"
sleep 35
echo "after a trim: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \n' ' ') load $(cat /proc/loadavg)"
kill -9 $pid; sleep 3; kill $sim; wait
