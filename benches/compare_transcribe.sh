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
apt_install espeak-ng sox python3-venv
venv="$HOME/.cache/callpipe/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import faster_whisper" 2>/dev/null || "$venv/bin/pip" install -q faster-whisper

data="$HOME/.cache/callpipe/bench-calls/${calls}x${minutes}min"
if [ ! -f "$data/manifest.json" ]; then
    python3 scripts/make_call.py --out "$data" --calls "$calls" --minutes "$minutes" --seed 42
fi

cargo build --release --locked
"$CALLPIPE_BIN" model install
model="${CALLPIPE_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/callpipe/models}/whisper-tiny.en"
"$venv/bin/python" benches/compare_transcribe.py --callpipe "$CALLPIPE_BIN" --model "$model" \
    --threads "$threads" "$data/manifest.json" tests/fixtures/eval/manifest.json "$@"
