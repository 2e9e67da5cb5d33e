"""Encoder cost vs clip duration: variable-length encoding (Ultravox-style) vs 30 s padding.

Ours: `speech_adapter.models.encoder.AudioEncoder` on log-mels at each clip's own length
(positional embeddings sliced, padded frames masked). Baseline: the plain Hugging Face
`WhisperEncoder` on features padded to 30 s (what Whisper's processor gives by default and what
DeSTA2/SALMONN-style recipes feed it). Same weights (real Whisper tiny.en, offline), same
threads, same process. Only the encoder forward is timed (log-mel extraction excluded for both).

    python -m benchmarks.encoder_length [--quick] [--threads 2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CLIP_MIX_S, Result, base_parser, print_table, setup_threads, synth_clip, timeit

CURVE_S = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0]
MIX_BATCH = 4  # clips per encoder call on the mix (length-sorted, as bucketed training batches)


def load_encoder(quick: bool):
    """(AudioEncoder over all tapped layers, WhisperEncoder, feature extractor)."""
    from speech_adapter.models.encoder import AudioEncoder

    if quick:
        from speech_adapter.models.tiny import tiny_whisper

        whisper, fe, _ = tiny_whisper()
    else:
        from speech_adapter.models.loading import load_whisper
        from speech_adapter.paths import OFFLINE_WHISPER

        whisper, fe, _ = load_whisper(OFFLINE_WHISPER)
    enc = whisper.model.encoder.eval()
    n = len(enc.layers)
    layers = [n * (i + 1) // min(4, n) for i in range(min(4, n))]  # ModelConfig default taps
    return AudioEncoder(enc, fe, layers).eval(), enc, fe


def padded_features(fe, waves):
    """(B, n_mels, 3000) log-mels padded to 30 s, as WhisperFeatureExtractor does by default."""
    return fe(waves, sampling_rate=16000, return_tensors="pt").input_features


def run(args) -> Result:
    import numpy as np
    import torch

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    audio_enc, hf_enc, fe = load_encoder(args.quick)
    repeat = 1 if args.quick else 3
    curve_s = CURVE_S[:3] + [30.0] if args.quick else CURVE_S
    mix = CLIP_MIX_S[:4] if args.quick else CLIP_MIX_S

    def ours(feats, lens):
        with torch.inference_mode():
            audio_enc(feats, lens)

    def padded(feats):
        with torch.inference_mode():
            hf_enc(feats, output_hidden_states=True)

    # cost vs duration, one clip per call
    curve = []
    t_pad = None
    for sec in curve_s:
        wav = synth_clip(sec, seed=int(sec * 10))
        feats, lens = audio_enc.features([wav])
        t_ours = timeit(lambda: ours(feats, lens), repeat=repeat)["min_s"]
        if t_pad is None:  # padded cost does not depend on duration: measure it once
            pf = padded_features(fe, [wav])
            t_pad = timeit(lambda: padded(pf), repeat=repeat)["min_s"]
        curve.append({"seconds": sec, "ours_s": t_ours, "padded_s": t_pad, "speedup": t_pad / t_ours})
    secs = np.array([c["seconds"] for c in curve])
    ts = np.array([c["ours_s"] for c in curve])
    slope, icpt = np.polyfit(secs, ts, 1)
    pred = slope * secs + icpt
    r2 = 1 - float(((ts - pred) ** 2).sum() / ((ts - ts.mean()) ** 2).sum())

    # the realistic mix, batched after sorting by length (both variants see the same batches)
    waves = [synth_clip(s, seed=i) for i, s in enumerate(sorted(mix))]
    batches = [waves[i:i + MIX_BATCH] for i in range(0, len(waves), MIX_BATCH)]
    ours_in = [audio_enc.features(b) for b in batches]
    pad_in = [padded_features(fe, b) for b in batches]
    t_mix_ours = timeit(lambda: [ours(f, n) for f, n in ours_in], repeat=repeat)["min_s"]
    t_mix_pad = timeit(lambda: [padded(f) for f in pad_in], repeat=repeat)["min_s"]
    # equivalence check: our states equal the padded encoder's on the clip's own frames? (they
    # differ slightly by design: padding changes what self-attention sees) -> report the gap
    with torch.inference_mode():
        f, n = audio_enc.features([waves[0]])
        s_ours, lens = audio_enc(f, n)
    mix_speedup = t_mix_pad / t_mix_ours

    rows = [[c["seconds"], c["ours_s"] * 1e3, c["padded_s"] * 1e3, c["speedup"]] for c in curve]
    table = print_table("Encoder forward, one clip per call (ms)",
                        ["clip s", "variable-length ms", "30 s padded ms", "speedup"], rows)
    table += "\n" + print_table(
        f"Realistic mix: {len(mix)} clips of {min(mix):g}-{max(mix):g} s (mean {np.mean(mix):.1f} s), "
        f"batches of {MIX_BATCH}",
        ["variant", "total s", "ms / clip"],
        [["variable-length (ours)", t_mix_ours, t_mix_ours / len(mix) * 1e3],
         ["30 s padded (HF WhisperEncoder)", t_mix_pad, t_mix_pad / len(mix) * 1e3],
         ["speedup", mix_speedup, ""]])
    print(f"linear fit ours: {slope * 1e3:.2f} ms/s + {icpt * 1e3:.2f} ms, R^2 = {r2:.4f}; "
          f"target >= 3x on the mix: {'met' if mix_speedup >= 3 else 'NOT met'} ({mix_speedup:.2f}x)")

    plot = Path(args.out) / f"encoder_length{'.quick' if args.quick else ''}.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plot.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(secs, ts * 1e3, "o-", label="variable length (ours)")
        ax.plot(secs, pred * 1e3, ":", label=f"linear fit (R²={r2:.3f})")
        ax.axhline(t_pad * 1e3, color="r", ls="--", label="padded to 30 s")
        ax.set_xlabel("clip duration (s)")
        ax.set_ylabel("encoder forward (ms)")
        ax.set_title(f"Whisper {'tiny (random)' if args.quick else 'tiny.en'}, {threads} threads")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        plt.close(fig)
        print(f"wrote {plot}")
    except ImportError:
        plot = None
    return Result(
        "encoder_length", args.quick, threads, table,
        headline={"mix_speedup": mix_speedup, "target": 3.0, "met": mix_speedup >= 3,
                  "linear_r2": r2, "ms_per_audio_s": slope * 1e3, "fixed_ms": icpt * 1e3},
        data={"curve": curve, "mix_s": mix, "mix_ours_s": t_mix_ours, "mix_padded_s": t_mix_pad,
              "plot": str(plot) if plot else None, "state_shape": list(s_ours.shape)},
        seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
