#!/usr/bin/env bash
# The distributed worker against the in-process pipeline: `callpipe worker --stage all` through
# real local SQS + S3 (moto) and Redis, and `callpipe run` on the same calls with the same
# --threads. Throughput (audio seconds per wall second, model loads included) as worker / run
# (goal >= 0.9), peak RSS of each, the worker's RSS against queue depth, the round trip of an
# empty job through all three stages on a warm idle worker (median and p90), and the share of
# the engine replicas' time spent outside the engine.
#
#   benches/compare_workers.sh [--calls N] [--minutes M] [--threads T] [--runs R] [-- extra args]
#
# Defaults: 10 calls x 3 min (30 min of audio), 2 threads, 1 round. Installs espeak-ng and sox,
# moto (venv under ~/.cache/callpipe) and redis-server, makes the synthetic stereo 8 kHz calls
# (cached), builds callpipe and installs the model. Rounds alternate run, worker, run, worker.
# Extra args go to compare_workers.py (e.g. `--json rows.json`, `--empty-jobs 20`, `--keep`).
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$CALLPIPE_ROOT"

calls=10
minutes=3
threads=2
runs=1
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) calls="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--calls N] [--minutes M] [--threads T] [--runs R] [-- extra args]" >&2; exit 2 ;;
    esac
done

ensure_build_deps
apt_install espeak-ng sox
ensure_test_servers
python="$(dirname "$CALLPIPE_MOTO_SERVER")/python"  # the servers venv has boto3
data="$(bench_calls "$calls" "$minutes")"

cargo build --release --locked >&2
"$CALLPIPE_BIN" model install >&2
"$python" benches/compare_workers.py --callpipe "$CALLPIPE_BIN" --moto-server "$CALLPIPE_MOTO_SERVER" \
    --threads "$threads" --runs "$runs" "$data" "$@"
