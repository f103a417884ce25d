#!/usr/bin/env bash
# Installs what is needed, builds callpipe and runs it on the bundled sample calls.
#
#   scripts/demo.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CALLPIPE_ROOT"

ensure_build_deps
cargo build --release --locked

samples=(tests/fixtures/calls/*.wav tests/fixtures/eval/audio/call_stereo_ulaw_constructed.wav
         tests/fixtures/eval/audio/openai_jfk.flac tests/fixtures/eval/audio/ps_librivox_0890_8k.opus)
echo "== callpipe probe (decode, split channels, resample to 16 kHz, find speech)"
"$CALLPIPE_BIN" probe "${samples[@]}"
