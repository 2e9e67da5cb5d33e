"""`speech-adapter train RECIPE.yaml [key=value ...]`: train an adapter from a recipe.

Reads the recipe's `model` and `train` sections (the other sections belong to other stages and
are passed over), validates both before any work, writes the resolved config to the run dir,
and runs the `Trainer` — resuming from the run dir's latest checkpoint when there is one.
Distributed: `accelerate launch --config_file recipes/accelerate/ddp_cpu.yaml -m
speech_adapter.train.cli RECIPE.yaml` (or the `speech-adapter` entry point under accelerate).
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

TOP_LEVEL = ("name", "output_dir", "seed", "model", "data", "distill", "train", "eval", "export")


def configure(parser) -> None:
    parser.add_argument("recipe", help="recipe YAML (sections: model, train, ...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=3e-4")
    parser.add_argument("--run-dir", default=None,
                        help="where checkpoints, metrics and the adapter go (default: OUTPUT_DIR/train)")


def load_train_recipe(path, overrides: list[str] | None = None):
    """(ModelConfig, TrainConfig, run_dir, raw dict) from a recipe; raises ConfigError naming the key."""
    from speech_adapter.config import apply_overrides, from_dict, load_yaml
    from speech_adapter.errors import ConfigError
    from speech_adapter.models.config import ModelConfig
    from speech_adapter.train.config import TrainConfig

    data = apply_overrides(load_yaml(path), list(overrides or []))
    for key in data:
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(key, TOP_LEVEL, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known sections: {', '.join(TOP_LEVEL)}"
            raise ConfigError(f"{path}: unknown key '{key}'{hint}")
    model_cfg = from_dict(ModelConfig, data.get("model") or {}, prefix="model")
    train_raw = dict(data.get("train") or {})
    if "seed" not in train_raw and isinstance(data.get("seed"), int):
        train_raw["seed"] = data["seed"]  # the recipe-wide seed, unless train sets its own
    train_cfg = from_dict(TrainConfig, train_raw, prefix="train")
    train_cfg.check_paths()
    out = data.get("output_dir")
    if out is not None and not isinstance(out, str):
        raise ConfigError(f"{path}: output_dir: expected a path, got {out!r}")
    run_dir = Path(out) / "train" if out else Path("runs") / (data.get("name") or Path(path).stem) / "train"
    return model_cfg, train_cfg, run_dir, data


def run_training(model, train_cfg, run_dir, encoder_config: dict | None = None,
                 eval_hook=None) -> tuple[str, Path]:
    """Train `model` (built) with `train_cfg` in `run_dir`; returns (status, adapter dir)."""
    from speech_adapter.train.data import Rejects, TrainData, load_train_data, read_rows
    from speech_adapter.train.loop import Trainer

    run_dir = Path(run_dir)
    rejects = Rejects(run_dir / "rejects.jsonl")
    data = load_train_data(train_cfg, rejects)
    if hasattr(model, "adapter"):  # bucket by LLM tokens: less padding in each batch
        data.set_audio_token_rate(model)
    dev = None
    if train_cfg.dev_file is not None:
        dev = TrainData(read_rows(train_cfg.dev_file, train_cfg.objective, rejects), train_cfg,
                        rejects=rejects)
    trainer = Trainer(model, train_cfg, run_dir, data, dev, eval_hook=eval_hook,
                      encoder_config=encoder_config)
    trainer.setup()
    try:
        status = trainer.train()
    finally:
        trainer.cleanup()
    return status, run_dir / "adapter"


def main(args) -> int:
    from speech_adapter.config import to_dict
    from speech_adapter.models.speechlm import SpeechLM
    from speech_adapter.utils.io import write_json_atomic

    model_cfg, train_cfg, run_dir, _ = load_train_recipe(args.recipe, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", {"model": to_dict(model_cfg), "train": to_dict(train_cfg)})
    from accelerate.utils import set_seed

    set_seed(train_cfg.seed)  # the adapter's init comes from the recipe's seed: runs reproduce
    model = SpeechLM.build(model_cfg)
    enc_cfg = {"encoder": model_cfg.encoder, "layers": model.encoder.layers, "dtype": model_cfg.dtype}
    status, adapter = run_training(model, train_cfg, run_dir, encoder_config=enc_cfg)
    if status == "interrupted":
        print(f"interrupted: checkpoint saved in {run_dir / 'checkpoints'}; rerun to resume", file=sys.stderr)
        return 130
    print(f"adapter saved to {adapter}")
    return 0


if __name__ == "__main__":  # `accelerate launch -m speech_adapter.train.cli RECIPE.yaml`
    import argparse

    from speech_adapter.errors import SpeechAdapterError

    p = argparse.ArgumentParser(prog="speech_adapter.train.cli")
    configure(p)
    try:
        sys.exit(main(p.parse_args()))
    except SpeechAdapterError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
