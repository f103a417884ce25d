#!/usr/bin/env bash
# `callpipe backfill` listing and enqueue throughput on moto (S3 + SQS) with redis-server, and
# peak RSS against the number of objects listed (it should stay flat: the listing is streamed a
# page at a time).
#
#   benches/backfill_listing.sh [--objects N,N,...] [--enqueue]
#
# Defaults: 10000,50000,100000 objects (tiny keys under dated prefixes, filled once per size into
# a fresh moto). For each size: `backfill --dry-run` (survey-free listing + skip checks) and,
# with --enqueue, a real run into an SQS backfill lane (max_in_flight 100000, no rate limit).
# Prints one line per size and mode: objects, wall s, objects/s, peak RSS (from /usr/bin/time).
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$CALLPIPE_ROOT"

sizes="10000,50000,100000"
enqueue=0
while [ $# -gt 0 ]; do
    case "$1" in
        --objects) sizes="$2"; shift 2 ;;
        --enqueue) enqueue=1; shift ;;
        *) echo "usage: $0 [--objects N,N,...] [--enqueue]" >&2; exit 2 ;;
    esac
done

ensure_build_deps
ensure_test_servers
apt_install time
python="$(dirname "$CALLPIPE_MOTO_SERVER")/python"  # the servers venv has boto3
cargo build --release --locked >&2

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port="$(free_port)"
redis-server --port "$redis_port" --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
for n in ${sizes//,/ }; do
    moto_port="$(free_port)"
    "$CALLPIPE_MOTO_SERVER" -p "$moto_port" >"$work/moto-$n.log" 2>&1 &
    moto_pid=$!
    pids+=($moto_pid)
    export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
    for _ in $(seq 50); do curl -sf "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1 && break; sleep 0.2; done
    read -r queue_url ingest_url < <("$python" - "$n" <<'PY'
import sys, boto3
from concurrent.futures import ThreadPoolExecutor
n = int(sys.argv[1])
s3 = boto3.client("s3")
s3.create_bucket(Bucket="archive")
def put(i):
    s3.put_object(Bucket="archive", Key=f"calls/{2015 + i % 10}/{1 + i % 12:02}/{1 + i % 28:02}/call-{i:07}.wav", Body=b"RIFF")
with ThreadPoolExecutor(32) as pool:
    list(pool.map(put, range(n)))
sqs = boto3.client("sqs")
print(sqs.create_queue(QueueName="backfill")["QueueUrl"], sqs.create_queue(QueueName="ingest")["QueueUrl"])
PY
)
    run() {
        local mode="$1"; shift
        local data="$work/data-$n-$mode"
        /usr/bin/time -f "%e %M %U %S" -o "$work/time" \
            env CALLPIPE_STORAGE__S3_FORCE_PATH_STYLE=true \
                CALLPIPE_REDIS__URL="redis://127.0.0.1:$redis_port" \
                CALLPIPE_QUEUE__INGEST_URL="$ingest_url" CALLPIPE_QUEUE__BACKFILL_URL="$queue_url" \
                CALLPIPE_BACKFILL__MAX_IN_FLIGHT=100000 \
            "$CALLPIPE_BIN" --data-dir "$data" backfill s3://archive/calls/ --json "$@" >"$work/out.json"
        read -r wall rss_kb user_s sys_s <"$work/time"
        local listed
        listed="$("$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d.get("counts") or d["this_run"]; print(c["listed"])' "$work/out.json")"
        "$python" -c 'import sys; n,w,r,m,c=int(sys.argv[1]),float(sys.argv[2]),int(sys.argv[3]),sys.argv[4],float(sys.argv[5])+float(sys.argv[6]); print(f"{m:8} {n:8d} objects  {w:7.1f} s  {n/w:8.0f} objects/s  callpipe CPU {c:6.1f} s  peak RSS {r/1024:6.1f} MB")' "$listed" "$wall" "$rss_kb" "$mode" "$user_s" "$sys_s"
    }
    run dry-run --dry-run
    if [ "$enqueue" = 1 ]; then
        run enqueue --rate 0
    fi
    kill "$moto_pid" 2>/dev/null || true
done
