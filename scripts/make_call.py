#!/usr/bin/env python3
"""Make synthetic two-party call recordings with known turn times.

Each turn is spoken by espeak-ng (agent and customer get different voices), trimmed of its own
leading and trailing silence with sox, and placed on its party's channel at a known offset:
agent on the left, customer on the right, as call recorders do. The result is telephone audio
(8 kHz G.711 mu-law by default, band-limited to 300-3400 Hz, with a faint noise floor) plus a
JSON file with the true turns and a manifest entry with per-channel reference transcripts in the
format of `callpipe eval`.

With --word-timing each word is spoken on its own and the words are joined with a short gap, so
the truth also holds every word's exact start and end (slower, more deliberate speech).

With --script FILE the call is made from the turns in FILE instead of random lines, in order:

    {"name": "2026-03-02T09-14-05_billing-refund",
     "turns": [["agent", "Thank you for calling..."], ["customer", "Hi, I was charged..."]]}

It is written as <out>/<name>.wav, with its truth in <truth-out>/<name>.json and its manifest
entry added to <truth-out>/manifest.json (an entry for the same file is replaced; the others are
kept). Voices, speaking rates, pauses and telephone processing are as in the random mode; the
rates and pauses come from --seed, so a script and a seed always give the same file.

sox runs in repeatable mode (-R), so its noise floor and dither are seeded too: the same arguments
give byte-identical audio (with the same espeak-ng and sox versions).

    scripts/make_call.py --out DIR [--calls N] [--minutes M] [--seed S] [--word-timing]
    scripts/make_call.py --script FILE --out DIR [--truth-out DIR] [--seed S] [--word-timing]

Needs espeak-ng and sox (Debian packages of the same names).
"""

import argparse
import array
import json
import os
import random
import subprocess
import sys
import tempfile
import wave

AGENT_LINES = [
    "Thank you for calling Northwind support, my name is Dana, how can I help you today?",
    "I can help with that. Could you give me the account number on your statement?",
    "Thanks. I see the charge from the fourteenth of March for eighty nine dollars.",
    "That charge is for the premium plan, which renewed automatically last month.",
    "I can refund it today. It takes three to five business days to reach your card.",
    "Is there anything else I can help you with while I have you on the line?",
    "Let me check the delivery status of your order. One moment please.",
    "The parcel left our warehouse yesterday and should arrive on Thursday.",
    "I have updated the shipping address to the new apartment on Maple Street.",
    "For security, can you confirm the last four digits of your phone number?",
    "I understand the frustration, and I am sorry the technician did not arrive.",
    "I have booked a new appointment for Monday morning between nine and eleven.",
    "Your router needs a firmware update. I can push it remotely right now.",
    "Please unplug the modem for thirty seconds and then plug it back in.",
    "The cancellation fee is waived because you have been with us for six years.",
]

CUSTOMER_LINES = [
    "Hi, I was charged twice on my credit card and I would like a refund.",
    "Sure, the account number is four four seven two nine one.",
    "Yes, that one. I never asked for the premium plan.",
    "Okay, please cancel it so it does not renew again.",
    "No, that is everything. Thank you for your help.",
    "My package was supposed to arrive last week and it still has not come.",
    "I moved recently, so please send it to my new address.",
    "The internet keeps dropping every evening around eight o'clock.",
    "I already restarted it twice and nothing changed.",
    "Monday morning works for me. Will I get a text before they come?",
    "The last four digits are five five zero three.",
    "I want to close my account, the price went up again.",
    "Great, thanks. Can you email me a confirmation?",
    "That is fine, I will wait for the technician then.",
    "Could you repeat the reference number please?",
]

AGENT_VOICE = "en-us+m3"
CUSTOMER_VOICE = "en+f3"


def run(cmd):
    if cmd[0] == "sox":
        # Repeatable mode: sox seeds its noise and dither generators with a fixed number, so the
        # same inputs give the same file.
        cmd = ["sox", "-R"] + cmd[1:]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def speak(text, voice, speed, rate, tmp):
    """Speaks `text`, trims its silence, returns 16-bit samples at `rate`."""
    raw = os.path.join(tmp, "u.wav")
    trimmed = os.path.join(tmp, "t.wav")
    run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text])
    run([
        "sox", raw, "-r", str(rate), "-c", "1", "-b", "16", trimmed,
        "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse",
    ])
    with wave.open(trimmed, "rb") as w:
        data = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        data.byteswap()
    return data


WORD_GAP_S = 0.07


def speak_words(text, voice, speed, rate, tmp):
    """Speaks `text` word by word; returns the samples and each word's (start, end) in samples."""
    samples = array.array("h")
    spans = []
    for word in text.split():
        if samples:
            samples.extend([0] * int(WORD_GAP_S * rate))
        start = len(samples)
        samples.extend(speak(word, voice, speed, rate, tmp))
        spans.append((word, start, len(samples)))
    return samples, spans


ROLES = {"agent": 0, "customer": 1}


def make_call(path_base, minutes, rng, rate, encoding, noise_db, tmp, word_timing=False,
              script=None, truth_base=None):
    """Makes one call: random lines for about `minutes`, or the (role, text) turns of `script`.

    The audio goes to `path_base`.wav and the truth to `truth_base`.json (default `path_base`);
    returns the manifest entry, whose file name is relative to the truth's folder."""
    target_s = minutes * 60.0
    truth_base = truth_base or path_base
    left = array.array("h")
    right = array.array("h")
    turns = []
    t = rng.uniform(0.3, 1.0)
    speaker = 0
    pending = list(script) if script is not None else None
    while (t < target_s) if pending is None else pending:
        if pending is None:
            lines = AGENT_LINES if speaker == 0 else CUSTOMER_LINES
            text = rng.choice(lines)
        else:
            role, text = pending.pop(0)
            speaker = ROLES[role]
        voice = AGENT_VOICE if speaker == 0 else CUSTOMER_VOICE
        speed = rng.randint(150, 180)
        if word_timing:
            samples, spans = speak_words(text, voice, speed, rate, tmp)
        else:
            samples, spans = speak(text, voice, speed, rate, tmp), None
        start = int(t * rate)
        channel = left if speaker == 0 else right
        end = start + len(samples)
        for buf in (left, right):
            if len(buf) < end:
                buf.extend([0] * (end - len(buf)))
        channel[start:end] = samples
        turn = {
            "channel": speaker,
            "role": "agent" if speaker == 0 else "customer",
            "start_s": round(start / rate, 3),
            "end_s": round(end / rate, 3),
            "text": text,
        }
        if spans is not None:
            turn["words"] = [
                {"word": w, "start_s": round((start + a) / rate, 3), "end_s": round((start + b) / rate, 3)}
                for w, a, b in spans
            ]
        turns.append(turn)
        # The other party answers after a pause; sometimes the same party goes on.
        t = end / rate + rng.uniform(0.5, 1.6)
        if pending is None and rng.random() < 0.85:
            speaker = 1 - speaker
    tail = int(rate * rng.uniform(0.5, 1.5))
    for buf in (left, right):
        buf.extend([0] * tail)

    pcm = os.path.join(tmp, "call.wav")
    interleaved = array.array("h", bytes(len(left) * 4))
    interleaved[0::2] = left
    interleaved[1::2] = right
    if sys.byteorder == "big":
        interleaved.byteswap()
    with wave.open(pcm, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(interleaved.tobytes())

    out_wav = path_base + ".wav"
    effects = ["sinc", "300-3400"] if rate <= 16000 else []
    if noise_db is not None:
        # A faint noise floor like a real line, mixed under both channels.
        noise = os.path.join(tmp, "noise.wav")
        duration = len(left) / rate
        run(["sox", "-n", "-r", str(rate), "-c", "2", "-b", "16", noise,
             "synth", f"{duration:.3f}", "whitenoise", "vol", f"{noise_db}dB"])
        mixed = os.path.join(tmp, "mixed.wav")
        run(["sox", "-m", pcm, noise, mixed])
        pcm = mixed
    run(["sox", pcm, "-e", encoding, "-b", "8" if encoding in ("mu-law", "a-law") else "16",
         out_wav] + effects)

    duration_s = round(len(left) / rate, 3)
    # Paths relative to the truth's folder, as `callpipe eval` reads a manifest's paths.
    file_name = os.path.relpath(out_wav, os.path.dirname(os.path.abspath(truth_base)))
    truth = {
        "file": file_name,
        "sample_rate": rate,
        "channels": 2,
        "duration_s": duration_s,
        "turns": turns,
    }
    with open(truth_base + ".json", "w") as f:
        json.dump(truth, f, indent=1)
    refs = {
        str(ch): " ".join(turn["text"] for turn in turns if turn["channel"] == ch)
        for ch in (0, 1)
    }
    return {
        "file": file_name,
        "duration_s": duration_s,
        "sample_rate": rate,
        "channels": 2,
        "codec": "pcm_mulaw" if encoding == "mu-law" else encoding,
        "source": "scripts/make_call.py (espeak-ng + sox)",
        "license": "generated",
        "channel_references": refs,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=3.0, help="approximate length of each call")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=int, default=8000)
    ap.add_argument("--encoding", default="mu-law", help="sox encoding: mu-law, a-law, signed-integer")
    ap.add_argument("--noise-db", type=float, default=-60.0, help="noise floor in dBFS; 'none' to disable")
    ap.add_argument("--prefix", default="call")
    ap.add_argument("--word-timing", action="store_true", help="speak word by word and record word times")
    ap.add_argument("--script", metavar="FILE",
                    help='JSON {"name": ..., "turns": [["agent"|"customer", text], ...]}: '
                         "make one call from exactly these turns")
    ap.add_argument("--truth-out", metavar="DIR",
                    help="with --script: folder for the truth JSON and manifest.json (default --out)")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    if args.script:
        return make_scripted(args, rng)
    manifest = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.calls):
            base = os.path.join(args.out, f"{args.prefix}_{i:02d}")
            manifest.append(make_call(base, args.minutes, rng, args.rate, args.encoding,
                                      args.noise_db, tmp, args.word_timing))
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    total = sum(m["duration_s"] for m in manifest)
    print(f"wrote {len(manifest)} calls, {total / 60:.1f} min of audio, to {args.out}")


def load_script(path):
    with open(path) as f:
        script = json.load(f)
    name, turns = script.get("name"), script.get("turns")
    if not isinstance(name, str) or not name or os.path.basename(name) != name:
        sys.exit(f"{path}: `name` must be a plain file name without extension")
    if not isinstance(turns, list) or not turns:
        sys.exit(f"{path}: `turns` must be a non-empty list of [role, text] pairs")
    for i, turn in enumerate(turns):
        if (not isinstance(turn, list) or len(turn) != 2 or turn[0] not in ROLES
                or not isinstance(turn[1], str) or not turn[1].strip()):
            sys.exit(f"{path}: turn {i} must be [\"agent\" or \"customer\", non-empty text]")
    return name, [(role, " ".join(text.split())) for role, text in turns]


def make_scripted(args, rng):
    name, turns = load_script(args.script)
    truth_out = args.truth_out or args.out
    os.makedirs(truth_out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        entry = make_call(os.path.join(args.out, name), 0.0, rng, args.rate, args.encoding,
                          args.noise_db, tmp, args.word_timing, script=turns,
                          truth_base=os.path.join(truth_out, name))
    manifest_path = os.path.join(truth_out, "manifest.json")
    manifest = []
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    for i, old in enumerate(manifest):
        if old.get("file") == entry["file"]:
            manifest[i] = entry
            break
    else:
        manifest.append(entry)
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {os.path.join(args.out, name)}.wav ({entry['duration_s']:.1f} s, {len(turns)} turns), "
          f"its truth and manifest entry to {truth_out}")


if __name__ == "__main__":
    main()
