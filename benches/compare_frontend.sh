#!/usr/bin/env bash
# Front end vs faster-whisper's front end and vs ffmpeg, on one core.
#
#   benches/compare_frontend.sh [--calls N] [--minutes M]
#
# Installs ffmpeg, espeak-ng, sox and faster-whisper (in a venv under ~/.cache/callpipe),
# makes N synthetic stereo 8 kHz mu-law calls of about M minutes (cached), builds callpipe and
# prints both ratios.
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$CALLPIPE_ROOT"

calls=4
minutes=3
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) calls="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        *) echo "usage: $0 [--calls N] [--minutes M]" >&2; exit 2 ;;
    esac
done

ensure_build_deps
ensure_bench_env ffmpeg
venv="$BENCH_VENV"
data="$(bench_calls "$calls" "$minutes")"

cargo build --release --locked
taskset -c 0 "$venv/bin/python" benches/compare_frontend.py --callpipe "$CALLPIPE_BIN" "$data"/call_*.wav "$@"
