"""Does the frozen encoder hear gender on voices it never met? A linear probe per Whisper layer.

    python scripts/encoder_probe.py --train runs/standard/data/train_clips.jsonl \\
        --test runs/standard/data/heldout_clips.jsonl \\
        --encoders offline:whisper-tiny.en offline:whisper-base --out docs/encoder_probe.md

Each clip's encoder states are averaged over its frames, one vector per layer; a logistic
regression per layer (L2, standardized features) learns gender on the training clips and is
scored on the test clips, overall and per voice group (Kokoro voices trained on, Kokoro voices
held out, espeak-ng: `data_prep.synth.voice_group`). A pitch-only probe (log of the measured median
F0, on the clips where pyin found one) is the baseline a voice's height alone gives. When the probe is far above the trained
speech model on held-out voices, the encoder carries gender and the adapter or its training
loses it; when the probe is low too, the encoder (or the voices trained on) is the limit.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from data_prep.synth import VOICE_GROUPS, voice_group
from speech_adapter.audio import load_audio
from speech_adapter.utils.io import read_jsonl, write_text_atomic

def gendered(path) -> list[dict]:
    """The clips of a described/attributed corpus JSONL that have a known gender."""
    return [c for c in read_jsonl(path) if (c.get("meta") or {}).get("gender") in ("female", "male")]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 200):
    """A standardized L2 logistic regression; returns predict(x) -> 0/1 labels."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mean) / std, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    w_, b_ = w.detach().numpy(), float(b.detach())

    def predict(z: np.ndarray) -> np.ndarray:
        return (((z - mean) / std) @ w_ + b_ > 0).astype(int)

    return predict


@torch.no_grad()
def pooled_states(encoder_ref: str, clips: list[dict], batch_size: int = 8) -> np.ndarray:
    """(clips, layers, dim): each layer's states averaged over the clip's frames."""
    from speech_adapter.models.encoder import AudioEncoder  # lazy: torch models
    from speech_adapter.models.loading import load_whisper

    whisper, fe, _ = load_whisper(encoder_ref)
    enc = whisper.model.encoder
    audio_encoder = AudioEncoder(enc, fe, layers=list(range(1, len(enc.layers) + 1)))
    out = []
    for i in range(0, len(clips), batch_size):
        waves = [load_audio(c["audio"]) for c in clips[i:i + batch_size]]
        states, lengths = audio_encoder.encode(waves)  # (A, L, T, D), padded frames zeroed
        out.append((states.sum(2) / lengths[:, None, None].to(states.dtype)).numpy())
    return np.concatenate(out)


def accuracy(pred, y, mask) -> str:
    n = int(mask.sum())
    return "–" if n == 0 else f"{100 * float((pred[mask] == y[mask]).mean()):.1f} ({n})"


def probe_table(name: str, train_x, train_y, test_x, test_y, groups) -> list[str]:
    """One Markdown row per layer: accuracy overall, per voice group and per gender."""
    rows = []
    for layer in range(train_x.shape[1]):
        pred = fit_logistic(train_x[:, layer], train_y)(test_x[:, layer])
        cells = [accuracy(pred, test_y, np.ones_like(test_y, bool))]
        for g in VOICE_GROUPS:
            cells.append(accuracy(pred, test_y, groups == g))
        for sex in (0, 1):
            cells.append(accuracy(pred, test_y, test_y == sex))
        rows.append(f"| {name} layer {layer + 1} | " + " | ".join(cells) + " |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="clips JSONL the probe learns from (e.g. data/train_clips.jsonl)")
    ap.add_argument("--test", required=True, help="clips JSONL it is scored on (e.g. data/heldout_clips.jsonl)")
    ap.add_argument("--encoders", nargs="+", default=["offline:whisper-tiny.en"], help="Whisper refs to probe")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=None, help="only the first N clips of each file (a smoke test)")
    ap.add_argument("--out", default=None, help="Markdown file to write (default: stdout)")
    args = ap.parse_args(argv)
    train, test = gendered(args.train)[: args.limit], gendered(args.test)[: args.limit]
    for name, clips in (("--train", train), ("--test", test)):
        if len({c["meta"]["gender"] for c in clips}) < 2:
            ap.error(f"{name}: needs clips of both genders with meta.gender")
    train_y = np.array([c["meta"]["gender"] == "male" for c in train], dtype=int)
    test_y = np.array([c["meta"]["gender"] == "male" for c in test], dtype=int)
    groups = np.array([voice_group(c.get("meta") or {}) for c in test])

    head = ("| probe | all | · " + " | · ".join(VOICE_GROUPS) + " | · women | · men |")
    lines = [head, "|" + "---|" * 7]

    def pitched(clips):  # clips pyin found voiced frames in (noise or reverb can leave none)
        return np.array([bool((c.get("attributes") or {}).get("pitch_hz")) for c in clips])

    def log_pitch(clips):
        return np.array([[math.log(float(c["attributes"]["pitch_hz"]))] for c in clips])

    # scored on the clips with a measured pitch only (the counts say how many): an unmeasured
    # pitch read as 1 Hz once made this probe call most men women (57 % instead of 91 %)
    tr_p, te_p = pitched(train), pitched(test)
    lines += probe_table("pitch (log F0), clips with a measured pitch,",
                         log_pitch([c for c, k in zip(train, tr_p) if k])[:, None], train_y[tr_p],
                         log_pitch([c for c, k in zip(test, te_p) if k])[:, None], test_y[te_p], groups[te_p])
    timings = []
    for ref in args.encoders:
        t0 = time.time()
        train_x = pooled_states(ref, train, args.batch_size)
        test_x = pooled_states(ref, test, args.batch_size)
        timings.append(f"{ref} {time.time() - t0:.0f} s")
        lines += probe_table(ref, train_x, train_y, test_x, test_y, groups)
    text = (f"Gender from frame-averaged encoder states, a logistic regression per layer trained on "
            f"{len(train)} clips ({int(train_y.sum())} men), scored on {len(test)} "
            f"(`python scripts/encoder_probe.py {' '.join(sys.argv[1:] if argv is None else argv)}`; "
            f"{', '.join(timings)}). Accuracy % (clips):\n\n" + "\n".join(lines))
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
