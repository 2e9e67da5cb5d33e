"""`speech-adapter train RECIPE.yaml [key=value ...]`: train an adapter from a recipe.

Reads the recipe with `speech_adapter.recipe.load_recipe` (the reader every command shares) and
takes its `model` and `train` sections. The rows default to where `speech-adapter run` writes
them (OUTPUT_DIR/distill/distilled.jsonl); `--train-file` and friends name rows of your own.
Resumes from the run dir's latest checkpoint when there is one. A recipe with `variants` is
`run`'s to train, or one variant at a time with `--variant NAME`.
Distributed: `accelerate launch --config_file recipes/accelerate/ddp_cpu.yaml -m
speech_adapter.train.cli RECIPE.yaml` (or the `speech-adapter` entry point under accelerate).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from speech_adapter.config import to_dict
from speech_adapter.errors import ConfigError
from speech_adapter.recipe import load_recipe
from speech_adapter.utils.io import write_json_atomic


def configure(parser) -> None:
    parser.add_argument("recipe", help="recipe YAML; its model and train sections are used")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=3e-4")
    parser.add_argument("--train-file", default=None,
                        help="distilled JSONL to train on (default: OUTPUT_DIR/distill/distilled.jsonl)")
    parser.add_argument("--text-file", default=None, help="text-only replay rows (default: the recipe's "
                        "Magpie rows when replay.magpie_candidates > 0)")
    parser.add_argument("--dev-file", default=None, help="rows for the periodic dev loss")
    parser.add_argument("--variant", default=None, help="train this one of the recipe's variants")
    parser.add_argument("--run-dir", default=None,
                        help="where checkpoints, metrics and the adapter go (default: OUTPUT_DIR/train)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the recipe's model and train sections, print them, and stop")


def train_section(args):
    """(recipe, TrainConfig, run_dir) for the train command; raises ConfigError naming the key."""
    recipe = load_recipe(args.recipe, args.overrides, train_file=args.train_file, text_file=args.text_file,
                         dev_file=args.dev_file).pick_variant(args.variant, "train")
    train_cfg = recipe.train_config()
    run_dir = Path(args.run_dir) if args.run_dir else recipe.paths()["train"]
    return recipe, train_cfg, run_dir


def main(args) -> int:
    recipe, train_cfg, run_dir = train_section(args)
    if args.dry_run:
        print(yaml.safe_dump({"model": to_dict(recipe.model), "train": to_dict(train_cfg)}, sort_keys=False))
        print(f"run dir: {run_dir}")
        return 0
    if args.train_file is None and not Path(train_cfg.train_file).is_file():
        raise ConfigError(f"train.train_file: {train_cfg.train_file} not found; build it with "
                          f"`speech-adapter run {recipe.source} --until replay`, or pass --train-file")
    train_cfg.check_paths()
    # torch, transformers and accelerate load here, not at `--help`
    from accelerate.utils import set_seed

    from speech_adapter.models.speechlm import SpeechLM  # lazy: torch
    from speech_adapter.train.loop import run_training  # lazy: torch

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", {"model": to_dict(recipe.model), "train": to_dict(train_cfg)})
    set_seed(train_cfg.seed)  # the adapter's init comes from the recipe's seed: runs reproduce
    model = SpeechLM.build(recipe.model)
    enc_cfg = {"encoder": recipe.model.encoder, "layers": model.encoder.layers, "dtype": recipe.model.dtype}
    status, adapter = run_training(model, train_cfg, run_dir, encoder_config=enc_cfg)
    if status == "interrupted":
        print(f"interrupted: checkpoint saved in {run_dir / 'checkpoints'}; rerun to resume", file=sys.stderr)
        return 130
    print(f"adapter saved to {adapter}")
    return 0


if __name__ == "__main__":  # `accelerate launch -m speech_adapter.train.cli RECIPE.yaml`
    from speech_adapter.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
