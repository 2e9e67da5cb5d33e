"""Encoder-feature cache: second-epoch time with and without `speech_adapter/train/feature_cache.py`.

The encoder is frozen (DeSTA2, Ultravox), so its tapped states can be computed once and read
back on later epochs. Both runs use the real `Trainer` (`speech_adapter.train.cli.run_training`)
on the same rows and model, 2 epochs each, and read per-step times from its metrics.jsonl;
epoch 1 of the cached run also pays for writing the cache. Cache size per hour of audio is
measured from the files on disk.

    python -m benchmarks.feature_cache [--quick] [--threads 2] [--clips 16]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Result, base_parser, load_model, print_table, setup_threads, write_dataset


def train_two_epochs(model, train_file: Path, run_dir: Path, cache: bool, batch: int) -> dict:
    """Run 2 epochs with the real Trainer; per-epoch seconds from metrics.jsonl."""
    import torch

    from speech_adapter.train.loop import run_training
    from speech_adapter.train.config import TrainConfig
    from speech_adapter.utils.io import read_jsonl

    cfg = TrainConfig(train_file=train_file, epochs=2, batch_size=batch, save_every=0, keep_last=1,
                      log_every=1, cache_encoder=cache, cache_dir=run_dir / "cache", lr=1e-5)
    cfg.validate()
    state = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    enc_cfg = {"encoder": model.config.encoder, "layers": model.encoder.layers, "dtype": model.config.dtype}
    t0 = time.perf_counter()
    run_training(model, cfg, run_dir, encoder_config=enc_cfg)
    wall = time.perf_counter() - t0
    with torch.no_grad():  # both runs start from the same adapter weights
        for k, p in model.named_parameters():
            if k in state:
                p.copy_(state[k])
    rows = read_jsonl(run_dir / "metrics.jsonl")
    steps = len(rows) // 2  # log_every=1: one row per optimizer step, epoch 1 then epoch 2
    per_epoch = [sum(r["step_s"] for r in rows[:steps]), sum(r["step_s"] for r in rows[steps:])]
    size = sum(f.stat().st_size for f in (run_dir / "cache").rglob("*.safetensors")) if cache else 0
    return {"epoch1_s": per_epoch[0], "epoch2_s": per_epoch[1], "wall_s": wall, "cache_bytes": size,
            "steps_per_epoch": steps}


def run(args) -> Result:
    import soundfile as sf

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    model = load_model(args.quick)
    n = 4 if args.quick else args.clips
    batch = 2 if args.quick else 8
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        tmp = Path(tmp)
        train_file = write_dataset(tmp / "data", n, durations=[0.5, 1.0] if args.quick else None)
        hours = sum(sf.info(str(p)).duration for p in (tmp / "data" / "wav").glob("*.wav")) / 3600
        off = train_two_epochs(model, train_file, tmp / "no_cache", False, batch)
        on = train_two_epochs(model, train_file, tmp / "cache", True, batch)
    gb_per_hour = on["cache_bytes"] / hours / 1e9
    speedup = off["epoch2_s"] / on["epoch2_s"]
    table = print_table(
        f"Feature cache: {n} clips ({hours * 3600:.0f} s audio), batch {batch}, 2 epochs, real Trainer",
        ["variant", "epoch 1 s", "epoch 2 s", "wall s (incl. setup/save)"],
        [["no cache", off["epoch1_s"], off["epoch2_s"], off["wall_s"]],
         ["encoder cache", on["epoch1_s"], on["epoch2_s"], on["wall_s"]],
         ["epoch-2 speedup", "", speedup, ""]])
    table += "\n" + print_table("Cache size", ["bytes", "audio s", "GB per hour of audio"],
                                [[on["cache_bytes"], hours * 3600, gb_per_hour]])
    return Result("feature_cache", args.quick, threads, table,
                  headline={"epoch2_speedup": speedup, "gb_per_audio_hour": gb_per_hour},
                  data={"no_cache": off, "cache": on, "clips": n, "audio_hours": hours},
                  seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=16, help="clips per epoch")
    args = p.parse_args(argv)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
