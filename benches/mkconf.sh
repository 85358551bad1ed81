#!/bin/bash
# mkconf.sh NAME JOBS PORT: $DIR/NAME.toml for BENCHMARKS.md parts 18, 19 and 22: [api] with
# the bench's AK/SK against the simulator on 127.0.0.1:PORT, [storage] path = $DIR/NAME.db,
# [http] listen on port 0, and JOBS [[jobs]] (app demo-app, ids job-0000...).
set -e
name=$1; jobs=$2; port=$3
DIR=${DIR:-/tmp/m23}
mkdir -p "$DIR"
{
  cat <<TOML
[api]
endpoint = "http://127.0.0.1:$port"
project_id = "bench-project"
[api.auth]
access_key = "BENCHAK0000000000000"
secret_key = "bench-secret-key"
[storage]
path = "$DIR/$name.db"
[http]
listen = "127.0.0.1:0"
TOML
  awk -v n="$jobs" 'BEGIN { for (i = 0; i < n; i++) printf "[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-%04d\"\n", i }'
} > "$DIR/$name.toml"
