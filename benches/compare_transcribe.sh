#!/usr/bin/env bash
# Transcription vs faster-whisper (sequential, per channel, VAD on) and its
# BatchedInferencePipeline, with and without word timestamps on both sides.
#
#   benches/compare_transcribe.sh [--calls N] [--minutes M] [--threads T] [-- extra args]
#
# Installs espeak-ng, sox and faster-whisper (venv under ~/.cache/callpipe), makes N synthetic
# stereo 8 kHz mu-law calls of about M minutes (cached), installs the model, builds callpipe and
# prints every WER and the throughput ratio against the faster peer.
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$CALLPIPE_ROOT"

calls=4
minutes=3
threads=$(nproc)
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) calls="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--calls N] [--minutes M] [--threads T] [-- extra args]" >&2; exit 2 ;;
    esac
done

ensure_build_deps
ensure_bench_env
venv="$BENCH_VENV"
data="$(bench_calls "$calls" "$minutes")"

cargo build --release --locked
"$CALLPIPE_BIN" model install
model="${CALLPIPE_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/callpipe/models}/whisper-tiny.en"
"$venv/bin/python" benches/compare_transcribe.py --callpipe "$CALLPIPE_BIN" --model "$model" \
    --threads "$threads" "$data/manifest.json" tests/fixtures/eval/manifest.json "$@"
