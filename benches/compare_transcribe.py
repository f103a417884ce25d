#!/usr/bin/env python3
"""Transcription throughput and WER: callpipe against faster-whisper and its batched pipeline.

All three run the same CTranslate2 tiny.en weights at int8 on the same thread count, over the
same files: synthetic stereo calls (per-channel references) plus the English labelled files of
the eval set. Peers transcribe per channel with VAD on, as a call-center deployment would.
Every WER is computed by `callpipe eval --hypotheses`, so all sides share one normaliser.

    compare_transcribe.py --callpipe BIN --model DIR --threads N MANIFEST...

Timings exclude model loading and include decoding the audio, VAD and transcription.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def load_items(manifests):
    """Labelled English entries from each manifest, with absolute paths."""
    items = []
    for manifest in manifests:
        base = os.path.dirname(os.path.abspath(manifest))
        for entry in json.load(open(manifest)):
            if entry.get("language", "en") != "en":
                continue
            if not (entry.get("reference") or entry.get("channel_references")):
                continue
            entry = dict(entry)
            entry["file"] = os.path.join(base, entry["file"])
            items.append(entry)
    return items


def run_peer(name, transcribe_channel, items, decode_audio):
    hyps = {}
    audio_s = 0.0
    start = time.perf_counter()
    for entry in items:
        if entry.get("channel_references"):
            left, right = decode_audio(entry["file"], split_stereo=True)
            channels = {"0": left, "1": right}
            hyps[entry["file"]] = {ch: transcribe_channel(a) for ch, a in channels.items()}
            audio_s += len(left) / 16000
        else:
            audio = decode_audio(entry["file"])
            hyps[entry["file"]] = transcribe_channel(audio)
            audio_s += len(audio) / 16000
    wall = time.perf_counter() - start
    return {"name": name, "wall_s": wall, "audio_s": audio_s, "hyps": hyps}


def score(callpipe, manifest, hyps):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(hyps, f)
    out = subprocess.run(
        [callpipe, "eval", manifest, "--json", "--hypotheses", f.name],
        check=False, capture_output=True, text=True,
    ).stdout.strip().splitlines()
    os.unlink(f.name)
    return json.loads(out[-1])["wer"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callpipe", required=True)
    ap.add_argument("--model", required=True, help="CTranslate2 tiny.en directory")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8, help="for BatchedInferencePipeline")
    ap.add_argument("--callpipe-args", default="", help="extra flags for `callpipe eval`")
    ap.add_argument("manifests", nargs="+")
    args = ap.parse_args()

    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    items = []
    for entry in load_items(args.manifests):
        # Only files every system can read, so all are timed and scored on the same set.
        try:
            decode_audio(entry["file"])
            items.append(entry)
        except Exception as e:  # noqa: BLE001 - PyAV raises many kinds
            print(f"skipped (faster-whisper cannot decode it): {entry['file']}: {e!r}", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="callpipe-bench-")
    manifest = os.path.join(work, "manifest.json")
    json.dump(items, open(manifest, "w"))
    total_audio = None

    model = WhisperModel(args.model, device="cpu", compute_type="int8", cpu_threads=args.threads)
    batched = BatchedInferencePipeline(model)
    rows = []
    for words in (False, True):
        def sequential(audio):
            segments, _ = model.transcribe(
                audio, language="en", beam_size=args.beam_size, vad_filter=True,
                word_timestamps=words, condition_on_previous_text=False)
            return " ".join(s.text.strip() for s in segments)

        def batched_run(audio):
            segments, _ = batched.transcribe(
                audio, language="en", beam_size=args.beam_size, vad_filter=True,
                word_timestamps=words, batch_size=args.batch_size)
            return " ".join(s.text.strip() for s in segments)

        tag = "words" if words else "no words"
        for name, fn in (("faster-whisper", sequential), ("faster-whisper batched", batched_run)):
            fn(decode_audio(items[0]["file"]))  # warm-up
            r = run_peer(name, fn, items, decode_audio)
            r["wer"] = score(args.callpipe, manifest, r["hyps"])
            r["tag"] = tag
            total_audio = r["audio_s"]
            rows.append(r)

        cmd = [args.callpipe, "eval", manifest, "--json", "--threads", str(args.threads),
               "--replicas", str(args.threads), "--beam-size", str(args.beam_size)]
        cmd += args.callpipe_args.split()
        if not words:
            cmd.append("--no-words")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
        summary = json.loads(out[-1])
        rows.append({"name": "callpipe", "tag": tag, "wall_s": summary["wall_s"],
                     "audio_s": summary["audio_s"], "wer": summary["wer"]})

    print(f"{len(items)} files, {total_audio / 60:.1f} min of audio, {args.threads} threads, "
          f"beam {args.beam_size}, int8")
    print(f"{'system':<24} {'timestamps':<10} {'wall s':>8} {'x realtime':>11} {'WER %':>7}")
    for r in rows:
        print(f"{r['name']:<24} {r['tag']:<10} {r['wall_s']:>8.2f} {r['audio_s'] / r['wall_s']:>11.1f} "
              f"{r['wer'] * 100:>7.2f}")
    for tag in ("no words", "words"):
        mine = next(r for r in rows if r["tag"] == tag and r["name"] == "callpipe")
        peers = [r for r in rows if r["tag"] == tag and r["name"] != "callpipe"]
        best = min(peers, key=lambda r: r["wall_s"])
        print(f"{tag}: callpipe is {best['wall_s'] / mine['wall_s']:.2f}x the faster peer "
              f"({best['name']}); WER {mine['wer'] * 100:.2f}% vs {best['wer'] * 100:.2f}%")


if __name__ == "__main__":
    sys.exit(main())
