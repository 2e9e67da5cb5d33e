"""`speech-adapter eval build|run|compare`: make a suite, evaluate a model on it, compare runs.

    speech-adapter eval build --corpus heldout.jsonl --exclude distilled.jsonl --out suite.jsonl
    speech-adapter eval run --suite suite.jsonl --model runs/x/export --out runs/x/eval
    speech-adapter eval run --suite real --model runs/x/export --out runs/x/eval/real
    speech-adapter eval compare runs/sft/eval runs/distill/eval --out runs/compare

`build` and `run` also take `--recipe RECIPE.yaml`: the suite settings, eval settings and paths
then come from that recipe (read by `speech_adapter.recipe.load_recipe`, as every command reads
it); explicit flags override them.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from speech_adapter.config import from_dict, help_field, to_dict
from speech_adapter.errors import ConfigError
from speech_adapter.eval import external, suite as S
from speech_adapter.eval.real import build_real_suite
from speech_adapter.eval.report import compare, summary_markdown, write_report
from speech_adapter.eval.runner import (MODES, Mode, check_rows, decoding_key, evaluate, model_digest,
                                        reject_bad_audio)
from speech_adapter.eval.suite import load_rows
from speech_adapter.eval.systems import TEXT_BACKENDS, speechlm_generate_fn
from speech_adapter.prompts import REPETITION_PENALTY
from speech_adapter.recipe import load_recipe
from speech_adapter.templates import templates_for
from speech_adapter.utils.io import read_jsonl, write_json_atomic, write_jsonl_atomic


@dataclasses.dataclass
class RunConfig:
    """How `eval run` drives a model over a suite."""

    modes: list[Mode] = help_field(default_factory=lambda: ["speech", "text_ceiling", "text_retention", "cascade"],
                                   help="modes to run: speech, text_ceiling, text_retention, cascade")
    batch_size: int = help_field(8, "rows per generate call")
    max_new_tokens: int = help_field(128, "generation length cap")
    repetition_penalty: float = help_field(REPETITION_PENALTY, "penalty on tokens the reply already holds "
                                           "(1 = none), every mode alike")
    limit: int | None = help_field(None, "evaluate only the first N rows")
    text_backend: str = help_field("auto", "text_ceiling and cascade through: auto (CTranslate2 on a CPU "
                                           "when the backbone converts and repetition_penalty is 1), ctranslate2, transformers")

    def validate(self):
        if self.text_backend not in TEXT_BACKENDS:
            raise ConfigError(f"text_backend: {self.text_backend!r} is not one of {list(TEXT_BACKENDS)}")

        for m in self.modes:
            if m not in MODES:
                raise ConfigError(f"modes: {m!r} is not one of {list(MODES)}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("batch_size and max_new_tokens must be >= 1")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty: must be > 0 (1 = none), got {self.repetition_penalty}")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="make an eval suite from held-out clips (or the shipped real recordings)")
    b.add_argument("--recipe", default=None, help="take the suite settings and paths from this recipe")
    b.add_argument("--corpus", default=None,
                   help="described/attributed corpus JSONL of held-out clips (with --recipe: "
                        "OUTPUT_DIR/data/heldout_clips.jsonl), or `real`: the real recordings "
                        "shipped in speech_adapter/resources/real (gender, speech, transcript tasks)")
    b.add_argument("--exclude", action="append", default=[],
                   help="training clip ids (.txt) or distilled/training JSONL; repeatable")
    b.add_argument("--out", default=None, help="suite JSONL to write (with --recipe: OUTPUT_DIR/eval/suite.jsonl)")
    b.add_argument("--n-per-task", type=int, default=None, help="rows per task and split (default 20)")
    b.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
    b.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    b.add_argument("--constrained-fraction", type=float, default=None,
                   help="share of format-constrained rows (default 0.5)")
    b.add_argument("--json-fraction", type=float, default=None,
                   help="share of the constrained rows asked for JSON (default: as often as any other rule)")
    b.add_argument("--bare-fraction", type=float, default=None,
                   help="share of plain option questions asked without their option list (default 0)")
    b.add_argument("--on-training-clip", choices=["drop", "error"], default=None,
                   help="drop clips seen in training (default), or refuse the corpus")
    b.add_argument("--external", choices=["dynamic_superb", "speech_ifeval"], default=None,
                   help="read --corpus as an external benchmark (JSONL or save_to_disk dir) instead")
    b.add_argument("--audio-dir", default=None, help="where to write audio stored inside a dataset")
    b.add_argument("--dry-run", action="store_true", help="validate the settings, print them, and stop")
    r = sub.add_parser("run", help="evaluate a speech model on a suite")
    r.add_argument("--recipe", default=None, help="take the eval settings and paths from this recipe")
    r.add_argument("--variant", default=None, help="with --recipe: evaluate this variant's adapter")
    r.add_argument("--suite", default=None,
                   help="suite JSONL from `eval build`, or `real`: build the real-recordings suite "
                        "(default sampling; written to OUT/suite.jsonl) and evaluate on it")
    r.add_argument("--model", default=None, help="a SpeechLM adapter dir (save_adapter / export) or a training run dir")
    r.add_argument("--out", default=None, help="run output dir (generations cache, report)")
    r.add_argument("--system", default=None, help="name in the report and cache (default: model dir name)")
    r.add_argument("--modes", default=None,
                   help="comma-separated modes: speech, text_ceiling, text_retention, cascade (default: all)")
    r.add_argument("--batch-size", type=int, default=None, help="rows per generate call (default 8)")
    r.add_argument("--max-new-tokens", type=int, default=None, help="generation length cap (default 128)")
    r.add_argument("--repetition-penalty", type=float, default=None,
                   help=f"penalty on tokens the reply already holds, every mode alike (default {REPETITION_PENALTY}; 1 = none)")
    r.add_argument("--limit", type=int, default=None, help="only the first N rows")
    r.add_argument("--text-backend", default=None, choices=["auto", "ctranslate2", "transformers"],
                   help="how text_ceiling and cascade run the backbone (default auto: CTranslate2 on a CPU "
                        "when it converts)")
    r.add_argument("--dry-run", action="store_true", help="validate the settings, print them, and stop")
    c = sub.add_parser("compare", help="side-by-side table of runs or report.json files")
    c.add_argument("runs", nargs="+", help="run dirs or report.json paths")
    c.add_argument("--out", default=None, help="dir for compare.md and compare.png")


def main(args) -> int:
    return {"build": _build, "run": _run, "compare": _compare}[args.eval_command](args)


def build_settings(args) -> tuple[dict, "S.SuiteConfig"]:
    """(paths {corpus, exclude, out}, SuiteConfig) of `eval build`: the recipe's (--recipe), then
    the explicit flags; raises ConfigError naming what is missing."""
    paths, suite = {"corpus": args.corpus, "exclude": list(args.exclude), "out": args.out}, {}
    if args.recipe:
        recipe = load_recipe(args.recipe)
        p = recipe.paths()
        exclude = [str(p["distilled"])] + ([str(p["text_rows"])] if recipe.replay.magpie_candidates > 0 else [])
        paths = {"corpus": args.corpus or str(p["heldout_clips"]), "exclude": paths["exclude"] or exclude,
                 "out": args.out or str(p["suite"])}
        suite = to_dict(recipe.suite_config())
    flags = {"n_per_task": args.n_per_task, "seed": args.seed, "constrained_fraction": args.constrained_fraction,
             "on_training_clip": args.on_training_clip, "json_fraction": args.json_fraction,
             "bare_fraction": args.bare_fraction,
             "tasks": [t.strip() for t in args.tasks.split(",")] if args.tasks else None}
    suite.update({k: v for k, v in flags.items() if v is not None})
    for key in ("corpus", "out"):
        if not paths[key]:
            raise ConfigError(f"--{key}: required (or give --recipe)")
    return paths, from_dict(S.SuiteConfig, suite, prefix="eval.suite")


def _build(args) -> int:
    paths, cfg = build_settings(args)
    if args.dry_run:
        print(yaml.safe_dump({**paths, "suite": to_dict(cfg)}, sort_keys=False), end="")
        return 0
    if args.external:
        rows = (external.load_dynamic_superb(paths["corpus"], audio_dir=args.audio_dir)
                if args.external == "dynamic_superb" else
                external.load_speech_ifeval(paths["corpus"], audio_dir=args.audio_dir))
        stats = {"rows": len(rows), "external": args.external}
    else:
        ids, audio = S.training_keys(paths["exclude"])
        if paths["corpus"] == "real":
            rows, stats = build_real_suite(cfg, ids, audio)
        else:
            rows, stats = S.build_suite(S.load_rows(paths["corpus"]), cfg, ids, audio)
        for path in paths["exclude"]:  # no unseen template (in this suite or the registry) may be trained on
            if not str(path).endswith(".txt"):
                S.check_unseen_leak(templates_for(split="unseen") + rows, read_jsonl(path))
    out = Path(paths["out"])
    write_jsonl_atomic(out, rows)
    write_json_atomic(out.with_suffix(".stats.json"), stats)
    print(f"wrote {len(rows)} eval rows to {out}")
    for k, v in stats.items():
        if k != "per_task":
            print(f"  {k}: {v}")
    return 0


def run_settings(args) -> tuple[dict, RunConfig]:
    """(paths {suite, model, out, system}, RunConfig) of `eval run`: the recipe's (--recipe, the
    trained adapter of the recipe or of --variant), then the explicit flags."""
    paths = {"suite": args.suite, "model": args.model, "out": args.out, "system": args.system}
    run = {}
    if args.recipe:
        recipe = load_recipe(args.recipe).pick_variant(args.variant, "eval run --recipe")
        p = recipe.paths()
        name = recipe.variant or "trained"
        defaults = {"suite": str(p["suite"]), "model": str(p["train"] / "adapter"), "out": str(p["eval"] / name),
                    "system": name}
        paths = {k: v or defaults[k] for k, v in paths.items()}
        run = {"modes": list(recipe.eval.modes), "batch_size": recipe.eval.batch_size,
               "max_new_tokens": recipe.eval.max_new_tokens, "text_backend": recipe.eval.text_backend,
               "repetition_penalty": recipe.eval.repetition_penalty}
    flags = {"modes": [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else None,
             "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "limit": args.limit,
             "text_backend": args.text_backend, "repetition_penalty": args.repetition_penalty}
    run.update({k: v for k, v in flags.items() if v is not None})
    for key in ("suite", "model", "out"):
        if not paths[key]:
            raise ConfigError(f"--{key}: required (or give --recipe)")
    return paths, from_dict(RunConfig, run)


def _run(args) -> int:
    paths, cfg = run_settings(args)
    if args.dry_run:
        print(yaml.safe_dump({**paths, "run": to_dict(cfg)}, sort_keys=False), end="")
        return 0
    suite_path = paths["suite"]
    if suite_path == "real":
        real_rows, stats = build_real_suite(S.SuiteConfig())
        suite_path = Path(paths["out"]) / "suite.jsonl"
        write_jsonl_atomic(suite_path, real_rows)
        write_json_atomic(suite_path.with_suffix(".stats.json"), stats)
    rows = load_rows(suite_path)[: cfg.limit]
    check_rows(rows, suite_path)
    # adapter_dir imports torch (safetensors): kept out of `eval --help`
    from speech_adapter.models.adapter_dir import find_source, read_config  # lazy: torch

    model_dir = find_source(paths["model"])
    if {"speech", "cascade"} & set(cfg.modes):  # unreadable clips go to rejects.jsonl; the rest runs
        rows, n_bad = reject_bad_audio(rows, paths["out"], read_config(model_dir).max_audio_seconds)
        if n_bad:
            print(f"{n_bad} rows with unreadable audio skipped in speech mode (see {Path(paths['out']) / 'rejects.jsonl'})")
    system = paths["system"] or Path(paths["model"]).resolve().name
    loaded = []

    def generate(batch, mode):  # the model loads on first use: a fully cached rerun never loads it
        if not loaded:
            from speech_adapter.models.speechlm import SpeechLM  # lazy: torch

            model = SpeechLM.from_pretrained(model_dir)
            model.eval()
            loaded.append(speechlm_generate_fn(model, max_new_tokens=cfg.max_new_tokens,
                                               repetition_penalty=cfg.repetition_penalty,
                                               batch_size=cfg.batch_size, text_backend=cfg.text_backend))
        return loaded[0](batch, mode)

    gens = {m: generate for m in cfg.modes}
    # --out reused with another model or decoding: the old replies are dropped, not reread
    report = evaluate(rows, gens, system=system, out_dir=paths["out"], batch_size=cfg.batch_size,
                      cache_key={"adapter": model_digest(model_dir),
                                 "decoding": decoding_key(cfg.max_new_tokens, cfg.repetition_penalty)})
    report["model"] = str(model_dir)
    written = write_report(report, paths["out"])
    print(summary_markdown(report))
    print(f"report: {written['json']}")
    return 0


def _compare(args) -> int:
    print(compare(args.runs, args.out))
    return 0
