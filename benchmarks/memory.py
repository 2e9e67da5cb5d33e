"""Peak resident memory of a training step for the shipped CPU recipes (demo, standard).

Each measurement runs in its own subprocess so its peak RSS (`getrusage` ru_maxrss) is its own:
the child builds the recipe's model (its `model:` section) and runs two optimizer steps of the
Trainer's loss path (`objectives.compute_loss`, encoder included, fp32) on `train.batch_size`
clips of the realistic 2-10 s mix. RSS after loading the model is reported beside the peak so
the step's own share (activations, optimizer state) is visible. Recipes absent from recipes/
fall back to the ModelConfig/TrainConfig defaults, and the table says so.

    python -m benchmarks.memory [--quick] [--threads 2]
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

from benchmarks.common import Result, base_parser, print_table, setup_threads

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["demo", "standard"]


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    import resource

    cur = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
    except OSError:
        pass
    return cur, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(recipe: str, quick: bool) -> dict:
    """Build the recipe's model, run 2 training steps, report RSS (runs in a fresh process)."""
    import torch

    from benchmarks.common import examples
    from speech_adapter.config import from_dict, load_yaml
    from speech_adapter.models.config import ModelConfig
    from speech_adapter.train.config import TrainConfig
    from speech_adapter.train.objectives import compute_loss

    path = ROOT / "recipes" / f"{recipe}.yaml"
    raw = load_yaml(path) if path.exists() else {}
    mcfg = from_dict(ModelConfig, raw.get("model") or {}, prefix="model")
    tcfg = from_dict(TrainConfig, {k: v for k, v in (raw.get("train") or {}).items()
                                   if k not in ("train_file", "text_file", "dev_file", "text_mix")},
                    prefix="train")  # an audio step: replay rows are text-only and smaller
    if quick:
        from speech_adapter.models.tiny import tiny_config

        mcfg = tiny_config(mcfg.adapter.kind)
    start = _rss_mb()[0]
    from speech_adapter.models.speechlm import SpeechLM

    model = SpeechLM.build(mcfg)
    model.train()
    loaded = _rss_mb()[0]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tcfg.lr)
    rows = examples(tcfg.batch_size, durations=[0.5, 1.0] if quick else None, seed=3)
    for _ in range(2):
        loss, _ = compute_loss(model, rows, tcfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    cur, peak = _rss_mb()
    return {"recipe": recipe, "recipe_file": str(path) if path.exists() else None,
            "adapter": f"{mcfg.adapter.kind}/{mcfg.adapter.num_queries}q", "batch_size": tcfg.batch_size,
            "rss_start_mb": start, "rss_model_mb": loaded, "rss_peak_mb": peak,
            "step_mb": peak - loaded,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def run(args) -> Result:
    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    out = []
    for recipe in RECIPES:
        cmd = [sys.executable, "-m", "benchmarks.memory", "--child", recipe, "--threads", str(threads)]
        if args.quick:
            cmd.append("--quick")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"memory child for {recipe} failed:\n{p.stderr[-2000:]}")
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    rows = [[r["recipe"] + ("" if r["recipe_file"] else " (defaults)"), r["adapter"], r["batch_size"],
             r["rss_model_mb"], r["rss_peak_mb"], r["step_mb"]] for r in out]
    table = print_table("Peak RSS of a training step (own subprocess each, fp32, encoder included)",
                        ["recipe", "adapter", "batch", "RSS after load MB", "peak RSS MB", "step adds MB"], rows)
    return Result("memory", args.quick, threads, table,
                  headline={r["recipe"] + "_peak_mb": r["rss_peak_mb"] for r in out},
                  data={"runs": out}, seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--child", default=None, help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child, args.quick)))
        return 0
    run(args).write(args.out)
    return 0


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
