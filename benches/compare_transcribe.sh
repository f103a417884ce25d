#!/usr/bin/env bash
# Transcription cost per CPU second and WER: callpipe against faster-whisper (sequential, per
# channel, VAD on) and its BatchedInferencePipeline, greedy without word timestamps and beam 5
# with them, one thread per side and then two.
#
#   benches/compare_transcribe.sh [--calls N] [--minutes M] [--threads 1,2] [-- extra args]
#
# Installs espeak-ng, sox and faster-whisper (venv under ~/.cache/callpipe), makes N synthetic
# stereo 8 kHz mu-law calls of about M minutes (cached), installs the model, builds callpipe and
# prints CPU seconds, WER, peak RSS and encoder passes for every run, and callpipe's ratio
# against the faster peer. Extra args go to compare_transcribe.py (e.g. `--modes greedy`,
# `--json rows.json`, `--callpipe-args "--batch-size 16"`).
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$CALLPIPE_ROOT"

calls=4
minutes=3
threads=1,2
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) calls="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--calls N] [--minutes M] [--threads 1,2] [-- extra args]" >&2; exit 2 ;;
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
