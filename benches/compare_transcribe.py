#!/usr/bin/env python3
"""Transcription cost and WER: callpipe against faster-whisper and its batched pipeline.

All three run the same CTranslate2 tiny.en weights at int8 over the same files: synthetic
stereo 8 kHz calls (per-channel references) plus the English labelled files of the eval set.
Peers transcribe per channel with VAD on, as a call-center deployment would. Every WER is
computed by `callpipe eval --hypotheses`, so all sides share one normaliser.

Two modes, like for like on every side:
  greedy   beam 1, no word timestamps
  beam5    beam 5, word timestamps

Each (system, mode, thread count) runs in its own process, so CPU seconds and peak RSS are
that run's alone. The cost measure is audio seconds per CPU second (user + system, every
thread), timed after the model has loaded. At one thread both sides get one core; at two,
callpipe runs two single-thread replicas and faster-whisper two intra-op threads.

    compare_transcribe.py --callpipe BIN --model DIR [--threads 1,2] [--modes greedy,beam5] MANIFEST...
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

MODES = {"greedy": (1, False), "beam5": (5, True)}


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


def cpu_now():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peer_main(args):
    """Child process: one faster-whisper pipeline over the manifest; prints a JSON result."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    beam, words = MODES[args.mode]
    items = json.load(open(args.manifest))
    model = WhisperModel(args.model, device="cpu", compute_type="int8", cpu_threads=args.threads)
    encoded = [0]
    encode = model.encode

    def counting_encode(features):
        # Windows per encoder call: a batch of 8 counts 8.
        encoded[0] += features.shape[0] if getattr(features, "ndim", 2) == 3 else 1
        return encode(features)

    model.encode = counting_encode
    batched = BatchedInferencePipeline(model)

    def sequential(audio):
        segments, _ = model.transcribe(
            audio, language="en", beam_size=beam, vad_filter=True,
            word_timestamps=words, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments)

    def batched_run(audio):
        segments, _ = batched.transcribe(
            audio, language="en", beam_size=beam, vad_filter=True,
            word_timestamps=words, batch_size=args.batch_size)
        return " ".join(s.text.strip() for s in segments)

    transcribe = batched_run if args.peer == "batched" else sequential
    transcribe(decode_audio(items[0]["file"]))  # warm-up, untimed
    encoded[0] = 0
    hyps, audio_s = {}, 0.0
    wall0, cpu0 = time.perf_counter(), cpu_now()
    for entry in items:
        if entry.get("channel_references"):
            left, right = decode_audio(entry["file"], split_stereo=True)
            hyps[entry["file"]] = {"0": transcribe(left), "1": transcribe(right)}
            audio_s += len(left) / 16000
        else:
            audio = decode_audio(entry["file"])
            hyps[entry["file"]] = transcribe(audio)
            audio_s += len(audio) / 16000
    result = {"wall_s": time.perf_counter() - wall0, "cpu_s": cpu_now() - cpu0,
              "audio_s": audio_s, "encodes": encoded[0], "hyps": hyps}
    json.dump(result, sys.stdout)


def run_child(cmd):
    """Runs `cmd`, returning its stdout and its peak RSS in MiB (from wait4, so its own)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace"))
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
        out.seek(0)
        return out.read().decode(), usage.ru_maxrss / 1024


def score(callpipe, manifest, hyps):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(hyps, f)
    out = subprocess.run(
        [callpipe, "eval", manifest, "--json", "--hypotheses", f.name],
        check=False, capture_output=True, text=True,
    ).stdout.strip().splitlines()
    os.unlink(f.name)
    return json.loads(out[-1])["wer"]


def run_peer(args, manifest, peer, mode, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--peer", peer, "--mode", mode,
           "--threads", str(threads), "--model", args.model, "--batch-size", str(args.batch_size),
           "--manifest", manifest]
    out, rss = run_child(cmd)
    r = json.loads(out)
    r["wer"] = score(args.callpipe, manifest, r.pop("hyps"))
    r["rss_mb"] = rss
    r["name"] = "faster-whisper batched" if peer == "batched" else "faster-whisper"
    return r


def run_callpipe(args, manifest, mode, threads):
    beam, words = MODES[mode]
    cmd = [args.callpipe, "--threads", str(threads), "eval", manifest, "--json",
           "--replicas", str(threads), "--beam-size", str(beam)]
    cmd += args.callpipe_args.split()
    if not words:
        cmd.append("--no-words")
    out, rss = run_child(cmd)
    s = json.loads(out.strip().splitlines()[-1])
    engine = s.get("engine", {})
    return {"name": "callpipe", "wall_s": s["wall_s"], "cpu_s": s["cpu_s"], "audio_s": s["audio_s"],
            "wer": s["wer"], "rss_mb": rss, "encodes": engine.get("encodes"),
            "speech_s": engine.get("speech_s"), "engine": engine}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callpipe")
    ap.add_argument("--model", required=True, help="CTranslate2 tiny.en directory")
    ap.add_argument("--threads", default="1,2", help="thread counts to compare, comma-separated")
    ap.add_argument("--modes", default="greedy,beam5")
    ap.add_argument("--batch-size", type=int, default=8, help="for BatchedInferencePipeline")
    ap.add_argument("--callpipe-args", default="", help="extra flags for `callpipe eval`")
    ap.add_argument("--json", metavar="FILE", help="also write every row here")
    # Child-process mode (internal).
    ap.add_argument("--peer", choices=["sequential", "batched"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    ap.add_argument("manifests", nargs="*")
    args = ap.parse_args()
    if args.peer:
        args.threads = int(args.threads)
        return peer_main(args)

    from faster_whisper import decode_audio

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

    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for mode in args.modes.split(","):
            for system in ("sequential", "batched", "callpipe"):
                if system == "callpipe":
                    r = run_callpipe(args, manifest, mode, threads)
                else:
                    r = run_peer(args, manifest, system, mode, threads)
                r.update(mode=mode, threads=threads)
                rows.append(r)
                print(f"  {r['name']:<24} {mode:<7} {threads} thr: {r['cpu_s']:.1f} CPU s, "
                      f"WER {r['wer'] * 100:.2f}%", file=sys.stderr, flush=True)

    speech_s = next((r["speech_s"] for r in rows if r.get("speech_s")), None)
    audio_s = rows[0]["audio_s"]
    print(f"{len(items)} files, {audio_s / 60:.1f} min of channel audio"
          + (f", {speech_s / 60:.1f} min of speech (callpipe's VAD)" if speech_s else "")
          + ", tiny.en int8")
    print(f"{'system':<24} {'mode':<7} {'thr':>3} {'wall s':>7} {'CPU s':>7} {'audio s/CPU s':>13} "
          f"{'WER %':>6} {'RSS MB':>7} {'encodes':>7} {'per 30 s speech':>15}")
    for r in rows:
        per = (f"{r['encodes'] / (speech_s / 30):>15.2f}" if speech_s and r.get("encodes") is not None
               else f"{'':>15}")
        enc = f"{r['encodes']:>7}" if r.get("encodes") is not None else f"{'':>7}"
        print(f"{r['name']:<24} {r['mode']:<7} {r['threads']:>3} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} "
              f"{r['audio_s'] / r['cpu_s']:>13.1f} {r['wer'] * 100:>6.2f} {r['rss_mb']:>7.0f} {enc} {per}")
    if speech_s:
        print(f"floor: {speech_s / 30:.1f} encoder passes (one per 30 s of speech)")
    for threads in sorted({r["threads"] for r in rows}):
        for mode in args.modes.split(","):
            group = [r for r in rows if r["threads"] == threads and r["mode"] == mode]
            mine = next(r for r in group if r["name"] == "callpipe")
            best = min((r for r in group if r["name"] != "callpipe"), key=lambda r: r["cpu_s"])
            print(f"{mode}, {threads} thread(s): callpipe does {best['cpu_s'] / mine['cpu_s']:.2f}x the "
                  f"audio per CPU second of the faster peer ({best['name']}); "
                  f"WER {mine['wer'] * 100:.2f}% vs {best['wer'] * 100:.2f}%")
            phases = mine["engine"].get("phase_s") or {}
            total = sum(phases.values())
            if total:
                shares = ", ".join(f"{k} {v / total * 100:.0f}%" for k, v in phases.items())
                print(f"    callpipe engine time {total:.1f} s: {shares}")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
