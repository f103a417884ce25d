#!/usr/bin/env python3
"""Reference embeddings for all-MiniLM-L6-v2, computed without candle or torch.

Writes index/tests/fixtures/minilm_reference.json, which index/tests/embed.rs compares the Rust
embedder against. The model is run here from scratch in numpy (float64): the weights are read
with the safetensors numpy API and the text is tokenized with the Python `tokenizers` package,
one sentence at a time and without padding, so nothing about batching can leak into the
reference. The computation is what sentence-transformers does for this model: BERT, mean of the
last hidden state over the tokens, L2 normalisation, inputs cut at max_seq_length = 256 tokens.

Set up once (no torch needed):

    python3 -m venv ~/.cache/callpipe/venv-minilm
    ~/.cache/callpipe/venv-minilm/bin/pip install numpy safetensors tokenizers

then, with the model installed by `callpipe model install`:

    ~/.cache/callpipe/venv-minilm/bin/python scripts/minilm_reference.py [--model DIR]
"""

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 256

LONG = (
    "Thanks for holding. I have looked at your account and I can see what happened: the "
    "annual renewal ran on the fourteenth, and because the card on file had expired the "
    "first attempt was declined, so the system retried two days later with the new card you "
    "added, and that one went through. The declined attempt should never have shown up as a "
    "pending charge on your statement, but some banks display the authorization hold for up "
    "to seven business days before it drops off. So what I would suggest is that we wait "
    "until Friday, and if the hold is still there I will open a ticket with our billing team "
    "and they can send your bank a letter confirming that only one payment was captured."
)

SENTENCES = [
    "Hi, thanks for calling Acme support, this is Dana. How can I help you today?",
    "I was charged twice on my card.",
    "",
    "OK.",
    "Wait - what?! My account #4471-B says $1,299.00 (not $129.90)... that's wrong; fix it!!!",
    "Café résumé naïve: Zoë's 2nd appointment is at 3:45pm, 日本語 is fine too?",
    # More than 128 word pieces: what the packaged tokenizer.json would have cut.
    LONG,
    # More than 256 word pieces: cut at max_seq_length.
    LONG + " " + LONG,
]


def default_model_dir() -> Path:
    root = os.environ.get("CALLPIPE_MODEL_DIR")
    if root is None:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ["HOME"], ".cache")
        root = os.path.join(cache, "callpipe", "models")
    return Path(root) / "all-minilm-l6-v2"


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


class Bert:
    def __init__(self, model_dir: Path):
        config = json.loads((model_dir / "config.json").read_text())
        assert config["model_type"] == "bert" and config["hidden_act"] == "gelu", config
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]
        raw = load_file(str(model_dir / "model.safetensors"))
        self.w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in raw.items()}

    def linear(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def norm(self, x, name):
        return layer_norm(x, self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def forward(self, ids):
        w = self.w
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(n)]
            + w["embeddings.token_type_embeddings.weight"][np.zeros(n, dtype=np.int64)]
        )
        x = self.norm(x, "embeddings.LayerNorm")
        hidden = x.shape[-1]
        head = hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t):
                return t.reshape(n, self.heads, head).transpose(1, 0, 2)

            q = split(self.linear(x, p + "attention.self.query"))
            k = split(self.linear(x, p + "attention.self.key"))
            v = split(self.linear(x, p + "attention.self.value"))
            probs = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(head))
            ctx = (probs @ v).transpose(1, 0, 2).reshape(n, hidden)
            x = self.norm(self.linear(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            inner = gelu(self.linear(x, p + "intermediate.dense"))
            x = self.norm(self.linear(inner, p + "output.dense") + x, p + "output.LayerNorm")
        return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "index/tests/fixtures/minilm_reference.json",
    )
    args = parser.parse_args()
    if not (args.model / "model.safetensors").is_file():
        raise SystemExit(f"{args.model}: no model.safetensors; run `callpipe model install` first")

    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    # The packaged tokenizer pads and truncates at 128: no padding here, truncation at 256.
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    bert = Bert(args.model)

    out = []
    for text in SENTENCES:
        ids = np.array(tokenizer.encode(text).ids, dtype=np.int64)
        mean = bert.forward(ids).mean(0)
        vector = mean / max(np.linalg.norm(mean), 1e-12)
        out.append({"text": text, "tokens": len(ids), "vector": [round(float(v), 6) for v in vector]})
        print(f"{len(ids):4d} tokens  {text[:60]!r}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One line per sentence, so a diff of the fixture shows which sentences changed.
    head = {
        "model": "all-MiniLM-L6-v2",
        "computed_by": "scripts/minilm_reference.py (numpy float64, per sentence, no padding)",
        "max_tokens": MAX_TOKENS,
    }
    lines = [json.dumps(s, ensure_ascii=False) for s in out]
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    text += ',\n "sentences": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    json.loads(text)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
