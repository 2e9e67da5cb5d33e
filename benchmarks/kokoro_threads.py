"""Kokoro-82M synthesis at 1 and at N onnxruntime threads: time, real-time factor, same audio?

`data synth --engine kokoro|mixed` speaks one clip at a time through one onnxruntime session;
`data.synth.kokoro_threads` sets that session's intra-op threads. This times the same sentences
and voices at each thread count in one process (each session warmed up first) and compares the
audio sample by sample.

    python -m benchmarks.kokoro_threads [--clips 12] [--kokoro-threads 1,2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Result, base_parser, print_table

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A rainbow is a division of white light into many beautiful colors.",
    "We will meet again tomorrow afternoon, after the long meeting ends.",
]
VOICES = ["af_heart", "am_michael", "bf_emma", "bm_george"]


def synthesize(engine, n: int) -> tuple[list, float, float]:
    """(clips, seconds, audio seconds) for the first `n` sentence x voice pairs."""
    clips, t0 = [], time.perf_counter()
    for i in range(n):
        clips.append(engine.speak(SENTENCES[i % len(SENTENCES)], VOICES[i % len(VOICES)], sampling_rate=16000))
    seconds = time.perf_counter() - t0
    return clips, seconds, sum(len(c) for c in clips) / 16000


def run(args) -> Result:
    import numpy as np

    from data_prep.kokoro_tts import KokoroEngine

    t_start = time.perf_counter()
    n = 2 if args.quick else args.clips
    counts = [int(t) for t in args.kokoro_threads.split(",")]
    rows, audio, data = [], {}, {}
    for t in counts:
        engine = KokoroEngine(threads=t)
        engine.speak("Warm up.", VOICES[0])  # builds the session
        clips, seconds, audio_s = synthesize(engine, n)
        audio[t] = clips
        data[t] = {"seconds": seconds, "audio_seconds": audio_s, "rtf": seconds / audio_s}
        print(f"threads {t}: {n} clips, {audio_s:.1f} s of audio in {seconds:.1f} s (RTF {seconds / audio_s:.2f})",
              flush=True)
    base = counts[0]
    for t in counts:
        diffs = [float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
                 for a, b in zip(audio[base], audio[t])]
        data[t]["max_abs_diff"] = max(diffs)
        data[t]["identical_clips"] = sum(d == 0.0 for d in diffs)
        rows.append([t, data[t]["seconds"], data[t]["rtf"], data[base]["seconds"] / data[t]["seconds"],
                     f"{data[t]['identical_clips']}/{n}", data[t]["max_abs_diff"]])
    table = print_table(f"Kokoro synthesis, {n} clips ({data[base]['audio_seconds']:.1f} s of audio)",
                        ["onnxruntime threads", "seconds", "RTF", f"speedup vs {base}", "identical clips",
                         "max abs diff"], rows)
    top = counts[-1]
    return Result(name="kokoro_threads", quick=args.quick, threads=top, table=table,
                  headline={"speedup": data[base]["seconds"] / data[top]["seconds"],
                            "identical_fraction": data[top]["identical_clips"] / n},
                  data={str(k): v for k, v in data.items()}, seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=12, help="sentences to speak at each thread count")
    p.add_argument("--kokoro-threads", default="1,2", help="comma-separated onnxruntime thread counts")
    args = p.parse_args(argv)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
