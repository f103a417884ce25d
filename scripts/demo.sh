#!/usr/bin/env bash
# The main job on a fresh machine: installs what is needed (build deps, the Whisper and MiniLM
# models), builds callpipe, runs the whole pipeline over the bundled sample calls with the
# embedded backends (data in ./callpipe-data), then lists the calls and searches them.
#
#   scripts/demo.sh
#
# Rerunning it skips the calls already indexed (`callpipe run --force` reprocesses).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CALLPIPE_ROOT"

ensure_build_deps
cargo build --release --locked
"$CALLPIPE_BIN" model install

echo
echo "== callpipe run samples/   (ingest -> transcribe -> index, into ./callpipe-data)"
"$CALLPIPE_BIN" run samples/
echo
echo "== callpipe calls list"
"$CALLPIPE_BIN" calls list
echo
echo "== callpipe search \"customer was billed twice and wants the money back\" --limit 3"
"$CALLPIPE_BIN" search "customer was billed twice and wants the money back" --limit 3
echo "== callpipe search fiber --role agent --limit 2"
"$CALLPIPE_BIN" search fiber --role agent --limit 2
echo "Try: $CALLPIPE_BIN calls show samples/2026-04-11T16-40-22_internet-outage.wav"
