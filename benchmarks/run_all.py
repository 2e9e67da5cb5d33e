"""Run every benchmark, print every ratio, write benchmarks/README.md.

Each benchmark runs in its own subprocess (clean memory, its own thread setting) at the same
thread count; the load average is recorded before each, since these CPUs are shared. The full
run takes about 10-15 minutes on 2 cores; `--quick` runs each on tiny random models in about a
minute (a smoke test: its numbers mean nothing) and writes results/README.quick.md instead.

    OMP_NUM_THREADS=2 python -m benchmarks.run_all [--quick] [--threads 2] [--only NAME ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, base_parser, machine

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ["encoder_length", "train_mfu", "feature_cache", "teacher_generation", "eval_generation", "peer_loop",
              "memory"]
TITLES = {
    "encoder_length": "1. Encoder cost vs duration (variable length vs 30 s padding)",
    "train_mfu": "2. Training step throughput and MFU",
    "feature_cache": "3. Encoder-feature cache",
    "teacher_generation": "4. Teacher generation (data distill): transformers vs CTranslate2",
    "eval_generation": "5. Eval generation: last-position prefill logits, CTranslate2 text ceiling",
    "peer_loop": "6. Against a peer-style training loop",
    "memory": "7. Memory",
}


def summary_rows(results: dict) -> list[list[str]]:
    """One line per headline: what, measured, target, met."""
    rows = []
    r = results.get("encoder_length")
    if r:
        h = r["headline"]
        rows.append(["encoder: variable length vs 30 s padding, 2-10 s mix", f"{h['mix_speedup']:.2f}x",
                     ">= 3x", "yes" if h["met"] else "no"])
        rows.append(["encoder cost linear in duration (R² of linear fit, 1-30 s)", f"{h['linear_r2']:.3f}",
                     "~1", ""])
    r = results.get("train_mfu")
    if r:
        h = r["headline"]
        rows.append([f"training-step MFU, best variant ({h['best_variant']})", f"{h['best_mfu']:.1%}",
                     ">= 60%", "yes" if h["met"] else "no"])
        rows.append(["training-step MFU, Trainer's compute_loss path", f"{h['trainer_mfu']:.1%}", "", ""])
        rows.append(["training tokens/s, Trainer's compute_loss path", f"{h['trainer_tokens_per_s']:.0f}", "", ""])
        rows.append(["step speedup vs logits=all, no bucketing, no cache",
                     f"{h['speedup_vs_all_logits']:.2f}x", "", ""])
        rows.append(["peak fp32 matmul (2048², same run)", f"{h['peak_gflop_s']:.0f} GFLOP/s", "", ""])
    r = results.get("feature_cache")
    if r:
        h = r["headline"]
        rows.append(["epoch-2 speedup with the encoder cache", f"{h['epoch2_speedup']:.2f}x", "", ""])
        rows.append(["cache size per hour of audio", f"{h['gb_per_audio_hour']:.2f} GB", "", ""])
    r = results.get("teacher_generation")
    if r:
        h = r["headline"]
        rows.append([f"teacher rows/s, ctranslate2 float32 vs transformers ({h['model']})",
                     f"{h['ct2_speedup']:.2f}x", f"same answers {h['ct2_same_answers']:.0%}", ""])
    r = results.get("eval_generation")
    if r:
        h = r["headline"]
        rows.append(["eval speech replies, prefill logits at the last position vs every position",
                     f"{h['speech_speedup']:.2f}x", f"same replies {h['speech_same_answers']:.0%}", ""])
        rows.append(["eval text ceiling, ctranslate2 vs SpeechLM.generate", f"{h['text_ceiling_speedup']:.2f}x",
                     f"same replies {h['text_ceiling_same_answers']:.0%}", ""])
    r = results.get("peer_loop")
    if r:
        h = r["headline"]
        rows.append(["epoch time, peer-style loop / ours (epoch 1, cold cache)", f"{h['speedup_epoch1']:.2f}x", "", ""])
        rows.append(["epoch time, peer-style loop / ours (epoch 2+, warm cache)", f"{h['speedup_epoch2']:.2f}x", "", ""])
    r = results.get("memory")
    if r:
        for run in r["data"]["runs"]:
            rows.append([f"peak RSS, training step, {run['recipe']} recipe", f"{run['rss_peak_mb']:.0f} MB", "", ""])
    return rows


def write_readme(path: Path, results: dict, info: dict, cmd: str, loads: dict, wall: float, quick: bool) -> None:
    from speech_adapter.utils.io import write_text_atomic

    lines = ["# Benchmarks", "",
             "Performance of speech_adapter's training path on the offline default models "
             "(Whisper tiny.en + Qwen2.5-Coder-0.5B-Instruct), each comparison measured side by side in one run.",
             "" if not quick else "\n**Quick smoke run on tiny random models: these numbers mean nothing.**\n",
             f"Command: `{cmd}` ({wall / 60:.1f} min).", "",
             f"Machine: {info['cpu']} ({info['cores']} cores visible; flags: {info['cpu_flags'] or 'n/a'}), "
             f"{info['threads']} torch threads, torch {info['torch']}, transformers {info['transformers']}, "
             f"Python {info['python']}. Load average before each benchmark: "
             + ", ".join(f"{k} {v:.1f}" for k, v in loads.items()) + ".", "",
             "## Summary", "", "| measure | result | target | met |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in summary_rows(results)]
    notes = ROOT / "benchmarks" / "NOTES.md"
    if notes.exists() and not quick:
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    for name in BENCHMARKS:
        if name in results:
            r = results[name]
            lines += ["", f"## {TITLES[name]}", "", f"`python -m benchmarks.{name}` — {r['seconds']:.0f} s", "",
                      r["table"].strip()]
            if name == "encoder_length" and r["data"].get("plot"):
                lines += ["", f"![encoder cost vs duration](results/{Path(r['data']['plot']).name})"]
            if name == "train_mfu" and r["data"].get("profile"):
                lines += ["", "torch.profiler, one step of the best variant:", "", "```",
                          r["data"]["profile"].strip(), "```"]
    write_text_atomic(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, choices=BENCHMARKS, help="run only these (none: just rewrite the README from results/)")
    args = p.parse_args(argv)
    names = BENCHMARKS if args.only is None else args.only  # `--only` alone: rewrite the README
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    loads, failed = {}, []
    for name in names:
        loads[name] = os.getloadavg()[0]
        cmd = [sys.executable, "-m", f"benchmarks.{name}", "--threads", str(args.threads), "--out", str(args.out)]
        if args.quick:
            cmd.append("--quick")
        print(f"\n=== {name} (load {loads[name]:.1f}) ===", flush=True)
        p_ = subprocess.run(cmd, cwd=ROOT, env=env)
        if p_.returncode != 0:
            failed.append(name)
            print(f"!!! {name} failed with exit code {p_.returncode}", flush=True)
    wall = time.perf_counter() - t0
    suffix = ".quick" if args.quick else ""
    results = {}
    for name in BENCHMARKS:  # also pick up results of earlier runs when --only was given
        f = Path(args.out) / f"{name}{suffix}.json"
        if f.exists():
            results[name] = json.loads(f.read_text())
    info = machine() | {"threads": args.threads}
    print("\n=== every ratio ===")
    for row in summary_rows(results):
        print(f"  {row[0]}: {row[1]}" + (f" (target {row[2]}: {'met' if row[3] == 'yes' else 'NOT met'})"
                                          if row[2] and row[3] else ""))
    cmd = f"OMP_NUM_THREADS={args.threads} python -m benchmarks.run_all" + (" --quick" if args.quick else "")
    readme = (Path(args.out) / "README.quick.md") if args.quick else ROOT / "benchmarks" / "README.md"
    write_readme(readme, results, info, cmd, loads, wall, args.quick)
    print(f"total {wall / 60:.1f} min" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
