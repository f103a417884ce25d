#!/usr/bin/env bash
# Rebuilds the audio-derived half of the search relevance set (tests/fixtures/search): each
# scripted call is spoken with scripts/make_call.py (its true turn times go to truth/), the
# real clips are copied from ../shared/eval, and everything is transcribed by callpipe's engine
# with its default model and settings (transcripts/). The scripts and the queries are the
# hand-written half and are not touched.
#
#     scripts/make_search_set.sh            # needs a built callpipe and `callpipe model install`
#
# The output depends on the espeak-ng, sox and model versions; commit it with the set, so that
# `callpipe eval-search` measures search, not the speech synthesis of the day.
set -euo pipefail
source "$(dirname "$0")/env.sh"
apt_install espeak-ng sox

SET="$CALLPIPE_ROOT/tests/fixtures/search"
EVAL_AUDIO="$CALLPIPE_ROOT/../shared/eval/audio"
[ -x "$CALLPIPE_BIN" ] || { echo "error: build callpipe first ($CALLPIPE_BIN)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/audio" "$SET/truth" "$SET/transcripts"

# Seed 11: speaking rates and pauses; the same seed always gives the same audio.
for script in "$SET"/scripts/*.json; do
    python3 "$CALLPIPE_ROOT/scripts/make_call.py" --script "$script" --seed 11 \
        --out "$work/audio" --truth-out "$SET/truth" >/dev/null
done
# make_call.py also writes a `callpipe eval` manifest; the set has no audio to point it at.
rm -f "$SET/truth/manifest.json"

# Real speech, where it fits a call archive: the 8 kHz mu-law JFK clip and two LibriVox clips,
# named by their recording date like the rest. Their truth is one turn: the whole clip.
real=(
    "jfk_8k_ulaw.wav:1961-01-20T12-00-00_real-jfk-inaugural.wav"
    "ps_librivox_0870.wav:2009-06-01T10-00-00_real-librivox-dashwood.wav"
    "ps_librivox_0920.wav:2009-06-02T10-00-00_real-librivox-amiable.wav"
)
for pair in "${real[@]}"; do
    cp "$EVAL_AUDIO/${pair%%:*}" "$work/audio/${pair##*:}"
done

"$CALLPIPE_BIN" transcribe --json "$work/audio"/*.wav >"$work/transcripts.jsonl"

python3 - "$SET" "$work/transcripts.jsonl" "$EVAL_AUDIO/../manifest.json" "${real[@]}" <<'EOF'
import json, os, sys

set_dir, jsonl, manifest = sys.argv[1:4]
real = dict(p.split(":")[::-1] for p in sys.argv[4:])
references = {e["file"].split("/")[-1]: e for e in json.load(open(manifest))}
for line in open(jsonl):
    out = json.loads(line)
    name = os.path.splitext(os.path.basename(out["file"]))[0]
    # `transcribe --json` flattens the transcript into the file's object.
    transcript = {k: out[k] for k in ("language", "language_probability", "model", "channels")}
    with open(os.path.join(set_dir, "transcripts", name + ".json"), "w") as f:
        json.dump(transcript, f, indent=1)
        f.write("\n")
    if name + ".wav" in real:
        ref = references[real[name + ".wav"]]
        channel = transcript["channels"][0]
        truth = {
            "file": real[name + ".wav"],
            "duration_s": ref["duration_s"],
            "turns": [{
                "channel": channel["channel"],
                "role": channel["role"],
                "start_s": 0.0,
                "end_s": ref["duration_s"],
                "text": ref["reference"],
            }],
        }
        with open(os.path.join(set_dir, "truth", name + ".json"), "w") as f:
            json.dump(truth, f, indent=1)
            f.write("\n")
print(f"transcripts written to {set_dir}/transcripts")
EOF
