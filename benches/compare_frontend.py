#!/usr/bin/env python3
"""The audio front end side by side with its peers, on the same files and one core.

Pairs, each reported as a ratio (peer time / callpipe time; above 1 means callpipe is faster):

1. `callpipe probe` (decode + resample + VAD on every channel) against faster-whisper's own
   front end: `decode_audio(..., split_stereo=True)` (PyAV decode + resample per channel) plus
   `get_speech_timestamps` (Silero VAD) on each channel.
2. `callpipe probe --no-vad` (decode + resample only) against ffmpeg decoding and resampling
   each channel to 16 kHz f32.

callpipe and ffmpeg are timed as whole processes (start-up included). faster-whisper is timed
inside one Python process after its imports and model load, which favours it. Each measurement
is the best of --repeat runs. Pin to one core with `taskset -c 0` (compare_frontend.sh does).

    compare_frontend.py --callpipe BIN FILE...
"""

import argparse
import json
import os
import subprocess
import sys
import time


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def callpipe(bin_path, files, extra):
    def run():
        subprocess.run([bin_path, "--threads", "1", "probe", "--json", *extra, *files],
                       check=True, stdout=subprocess.DEVNULL)
    return run


def ffmpeg(files):
    def run():
        for f in files:
            subprocess.run([
                "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1",
                "-i", f, "-filter_complex",
                "[0:a]channelsplit=channel_layout=stereo[l][r];"
                "[l]aresample=16000[lo];[r]aresample=16000[ro]",
                "-map", "[lo]", "-f", "f32le", "-y", "/dev/null",
                "-map", "[ro]", "-f", "f32le", "-y", "/dev/null",
            ], check=True)
    return run


def faster_whisper_frontend(files):
    from faster_whisper.audio import decode_audio
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions()
    # Load the Silero model once, outside the timed region.
    import numpy as np
    get_speech_timestamps(np.zeros(16000, dtype=np.float32), opts)

    def run():
        for f in files:
            channels = decode_audio(f, sampling_rate=16000, split_stereo=True)
            for audio in channels:
                get_speech_timestamps(audio, opts)
    return run


def probe_durations(bin_path, files):
    out = subprocess.run([bin_path, "probe", "--json", "--no-vad", *files],
                         check=True, capture_output=True, text=True).stdout
    return sum(json.loads(line)["duration_s"] for line in out.splitlines())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callpipe", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    audio_s = probe_durations(args.callpipe, args.files)
    calls = len(args.files)
    results = {
        "calls": calls,
        "audio_s": round(audio_s, 1),
        "cpus": sorted(os.sched_getaffinity(0)),
    }
    t = {}
    t["callpipe_full"] = best_of(args.repeat, callpipe(args.callpipe, args.files, []))
    t["faster_whisper_frontend"] = best_of(args.repeat, faster_whisper_frontend(args.files))
    t["callpipe_no_vad"] = best_of(args.repeat, callpipe(args.callpipe, args.files, ["--no-vad"]))
    t["ffmpeg"] = best_of(args.repeat, ffmpeg(args.files))
    for k, v in t.items():
        results[k] = {"wall_s": round(v, 4), "x_realtime": round(audio_s / v, 1)}
    results["ratio_vs_faster_whisper"] = round(t["faster_whisper_frontend"] / t["callpipe_full"], 2)
    results["ratio_vs_ffmpeg"] = round(t["ffmpeg"] / t["callpipe_no_vad"], 2)

    if args.json:
        print(json.dumps(results))
        return
    print(f"{calls} stereo calls, {audio_s / 60:.1f} min of audio, CPUs {results['cpus']}, best of {args.repeat}")
    print(f"{'':32} {'wall s':>9} {'x realtime':>11}")
    names = {
        "callpipe_full": "callpipe probe",
        "faster_whisper_frontend": "faster-whisper decode+Silero",
        "callpipe_no_vad": "callpipe probe --no-vad",
        "ffmpeg": "ffmpeg split+resample",
    }
    for k, label in names.items():
        print(f"{label:32} {results[k]['wall_s']:9.3f} {results[k]['x_realtime']:11.1f}")
    print(f"front end vs faster-whisper: {results['ratio_vs_faster_whisper']:.2f}x  (goal >= 5)")
    print(f"decode+resample vs ffmpeg:   {results['ratio_vs_ffmpeg']:.2f}x  (goal >= 1)")


if __name__ == "__main__":
    sys.exit(main())
