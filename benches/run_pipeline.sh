#!/usr/bin/env bash
# `callpipe run` end to end on at least 30 minutes of call audio (synthetic two-party stereo
# calls, 8 kHz mu-law): wall time, x realtime, the share of the Whisper replicas' time spent
# outside the engine (the pipeline's overhead), per-stage time, peak RSS and embedding
# throughput; and `callpipe transcribe` on the same files for the engine-only wall time.
#
#   benches/run_pipeline.sh [CALLS] [MINUTES_PER_CALL]     (default 10 x 3 min)
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$CALLPIPE_ROOT"
calls="${1:-10}" minutes="${2:-3}"

ensure_bench_env time
cargo build --release --locked >&2
"$CALLPIPE_BIN" model install >&2
data="$(bench_calls "$calls" "$minutes")"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== callpipe run on $calls calls x $minutes min ($data)"
/usr/bin/time -f '%M' -o "$out/rss" \
    "$CALLPIPE_BIN" --data-dir "$out/data" run --json "$data" > "$out/run.json" 2> "$out/run.log"
echo "== callpipe transcribe on the same files (no indexing)"
start=$(date +%s.%N)
"$CALLPIPE_BIN" transcribe "$data"/*.wav > /dev/null
transcribe_wall=$(python3 -c "print($(date +%s.%N) - $start)")

python3 - "$out/run.json" "$(cat "$out/rss")" "$transcribe_wall" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
rss_mb = int(sys.argv[2]) / 1024
tw = float(sys.argv[3])
print(f"calls            {s['calls_indexed']} indexed, {s['calls_failed']} failed")
print(f"audio            {s['audio_hours']*60:.1f} min ({s['speech_hours']*60:.1f} min of speech), {s['segments']} segments")
print(f"wall             {s['wall_s']:.1f} s, {s['x_realtime']:.1f}x realtime")
print(f"engine           {s['replicas']} replicas busy {s['engine_busy_s']:.1f} s")
print(f"outside engine   {100*s['outside_engine_share']:.1f}% of the replicas' wall time")
print(f"stages (summed)  ingest {s['ingest_s']:.1f} s, transcribe {s['transcribe_s']:.1f} s, index {s['index_s']:.1f} s (embedding {s['embed_s']:.1f} s)")
print(f"embedding        {s['segments']/max(s['embed_s'],1e-9):.0f} segments/s (1 thread, alongside the engine)")
print(f"peak RSS         {rss_mb:.0f} MB")
print(f"transcribe only  {tw:.1f} s wall; run adds {100*(s['wall_s']-tw)/s['wall_s']:.1f}% (index stage, stores, model loads)")
PY
