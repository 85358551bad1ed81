#!/usr/bin/env bash
# The whole benchmark: sets up the official Python SDK in .venv-bench/ (once), builds the
# release binary and runs `cargo bench --bench bench`. Arguments pick parts:
#   benches/run.sh                      # throughput latency footprint storage prune jobs_api (about 9 minutes)
#   benches/run.sh throughput storage   # some of them
# Results: the table on stdout and target/bench-results.json. Everything talks to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c 'import huaweicloudsdkcloudrtc' 2>/dev/null; then
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install --quiet huaweicloudsdkcloudrtc
fi
.venv-bench/bin/pip list 2>/dev/null | grep -i '^huaweicloudsdk' || true
cargo build --release --bins
exec cargo bench --bench bench -- "$@"
