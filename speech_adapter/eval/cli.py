"""`speech-adapter eval build|run|compare`: make a suite, evaluate a model on it, compare runs.

    speech-adapter eval build --corpus heldout.jsonl --exclude distilled.jsonl --out suite.jsonl
    speech-adapter eval run --suite suite.jsonl --model runs/x/export --out runs/x/eval
    speech-adapter eval run --suite real --model runs/x/export --out runs/x/eval/real
    speech-adapter eval compare runs/sft/eval runs/distill/eval --out runs/compare
"""

from __future__ import annotations

import argparse
import dataclasses

from speech_adapter.config import help_field


@dataclasses.dataclass
class RunConfig:
    """How `eval run` drives a model over a suite."""

    modes: list[str] = help_field(default_factory=lambda: ["speech", "text_ceiling", "text_retention", "cascade"],
                                  help="modes to run: speech, text_ceiling, text_retention, cascade")
    batch_size: int = help_field(8, "rows per generate call")
    max_new_tokens: int = help_field(128, "generation length cap")
    limit: int | None = help_field(None, "evaluate only the first N rows")
    text_backend: str = help_field("auto", "text_ceiling and cascade through: auto (CTranslate2 on a CPU "
                                           "when the backbone converts), ctranslate2, transformers")

    def validate(self):
        from speech_adapter.errors import ConfigError
        from speech_adapter.eval.runner import MODES
        from speech_adapter.eval.systems import TEXT_BACKENDS

        if self.text_backend not in TEXT_BACKENDS:
            raise ConfigError(f"text_backend: {self.text_backend!r} is not one of {list(TEXT_BACKENDS)}")

        for m in self.modes:
            if m not in MODES:
                raise ConfigError(f"modes: {m!r} is not one of {list(MODES)}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("batch_size and max_new_tokens must be >= 1")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="make an eval suite from held-out clips (or the shipped real recordings)")
    b.add_argument("--corpus", required=True,
                   help="described/attributed corpus JSONL of held-out clips, or `real`: the real recordings "
                        "shipped in speech_adapter/resources/real (gender, speech, transcript tasks)")
    b.add_argument("--exclude", action="append", default=[],
                   help="training clip ids (.txt) or distilled/training JSONL; repeatable")
    b.add_argument("--out", required=True, help="suite JSONL to write")
    b.add_argument("--n-per-task", type=int, default=20, help="rows per task and split")
    b.add_argument("--seed", type=int, default=0, help="sampling seed")
    b.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    b.add_argument("--constrained-fraction", type=float, default=0.5, help="share of format-constrained rows")
    b.add_argument("--on-training-clip", choices=["drop", "error"], default="drop",
                   help="drop clips seen in training, or refuse the corpus")
    b.add_argument("--external", choices=["dynamic_superb", "speech_ifeval"], default=None,
                   help="read --corpus as an external benchmark (JSONL or save_to_disk dir) instead")
    b.add_argument("--audio-dir", default=None, help="where to write audio stored inside a dataset")
    r = sub.add_parser("run", help="evaluate a speech model on a suite")
    r.add_argument("--suite", required=True,
                   help="suite JSONL from `eval build`, or `real`: build the real-recordings suite "
                        "(default sampling; written to OUT/suite.jsonl) and evaluate on it")
    r.add_argument("--model", required=True, help="a SpeechLM adapter dir (save_adapter / export) or a training run dir")
    r.add_argument("--out", required=True, help="run output dir (generations cache, report)")
    r.add_argument("--system", default=None, help="name in the report and cache (default: model dir name)")
    r.add_argument("--modes", default="speech,text_ceiling,text_retention,cascade",
                   help="comma-separated modes: speech, text_ceiling, text_retention, cascade")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--max-new-tokens", type=int, default=128)
    r.add_argument("--limit", type=int, default=None, help="only the first N rows")
    r.add_argument("--text-backend", default="auto", choices=["auto", "ctranslate2", "transformers"],
                   help="how text_ceiling and cascade run the backbone (auto: CTranslate2 on a CPU when it converts)")
    c = sub.add_parser("compare", help="side-by-side table of runs or report.json files")
    c.add_argument("runs", nargs="+", help="run dirs or report.json paths")
    c.add_argument("--out", default=None, help="dir for compare.md and compare.png")


def main(args) -> int:
    return {"build": _build, "run": _run, "compare": _compare}[args.eval_command](args)


def _build(args) -> int:
    from pathlib import Path

    from speech_adapter.config import from_dict
    from speech_adapter.eval import suite as S
    from speech_adapter.utils.io import write_json_atomic, write_jsonl_atomic

    if args.external:
        from speech_adapter.eval import external

        rows = (external.load_dynamic_superb(args.corpus, audio_dir=args.audio_dir)
                if args.external == "dynamic_superb" else
                external.load_speech_ifeval(args.corpus, audio_dir=args.audio_dir))
        stats = {"rows": len(rows), "external": args.external}
    else:
        cfg = from_dict(S.SuiteConfig, {
            "n_per_task": args.n_per_task, "seed": args.seed, "constrained_fraction": args.constrained_fraction,
            "on_training_clip": args.on_training_clip,
            "tasks": [t.strip() for t in args.tasks.split(",")] if args.tasks else None})
        ids, audio = S.training_keys(args.exclude)
        if args.corpus == "real":
            from speech_adapter.eval.real import build_real_suite

            rows, stats = build_real_suite(cfg, ids, audio)
        else:
            rows, stats = S.build_suite(S.load_rows(args.corpus), cfg, ids, audio)
        from speech_adapter.templates import templates_for
        from speech_adapter.utils.io import read_jsonl

        for path in args.exclude:  # no unseen template (in this suite or the registry) may be trained on
            if not path.endswith(".txt"):
                S.check_unseen_leak(templates_for(split="unseen") + rows, read_jsonl(path))
    out = Path(args.out)
    write_jsonl_atomic(out, rows)
    write_json_atomic(out.with_suffix(".stats.json"), stats)
    print(f"wrote {len(rows)} eval rows to {out}")
    for k, v in stats.items():
        if k != "per_task":
            print(f"  {k}: {v}")
    return 0


def resolve_model_dir(path) -> "Path":
    """An adapter dir from a model dir, a training run dir (its adapter/ or latest checkpoint)
    or a pipeline output dir (train/adapter); `ModelNotFoundError` names what was looked for."""
    from pathlib import Path

    from speech_adapter.errors import ModelNotFoundError

    root = Path(path)
    candidates = [root, root / "adapter", root / "train" / "adapter"]
    for base in (root, root / "train"):
        candidates += sorted((base / "checkpoints").glob("step-*"), reverse=True)
    for c in candidates:
        if (c / "adapter_config.json").exists():
            return c
    raise ModelNotFoundError(f"{root}: no adapter_config.json in it, its adapter/, train/adapter/ or "
                             "checkpoints/step-*/; pass a dir written by save_adapter or a training run dir")


def _run(args) -> int:
    from pathlib import Path

    from speech_adapter.config import from_dict
    from speech_adapter.eval.report import summary_markdown, write_report
    from speech_adapter.eval.runner import check_rows, evaluate, reject_bad_audio
    from speech_adapter.eval.systems import speechlm_generate_fn
    from speech_adapter.eval.suite import load_rows

    cfg = from_dict(RunConfig, {"modes": [m.strip() for m in args.modes.split(",") if m.strip()],
                                "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                                "limit": args.limit, "text_backend": args.text_backend})
    suite_path = args.suite
    if args.suite == "real":
        from speech_adapter.eval.real import build_real_suite
        from speech_adapter.eval.suite import SuiteConfig
        from speech_adapter.utils.io import write_json_atomic, write_jsonl_atomic

        real_rows, stats = build_real_suite(SuiteConfig())
        suite_path = Path(args.out) / "suite.jsonl"
        write_jsonl_atomic(suite_path, real_rows)
        write_json_atomic(suite_path.with_suffix(".stats.json"), stats)
    rows = load_rows(suite_path)[: cfg.limit]
    check_rows(rows, suite_path)
    model_dir = resolve_model_dir(args.model)
    if {"speech", "cascade"} & set(cfg.modes):  # unreadable clips go to rejects.jsonl; the rest runs
        from speech_adapter.models.speechlm import read_adapter_config

        rows, n_bad = reject_bad_audio(rows, args.out, read_adapter_config(model_dir).max_audio_seconds)
        if n_bad:
            print(f"{n_bad} rows with unreadable audio skipped in speech mode (see {Path(args.out) / 'rejects.jsonl'})")
    system = args.system or Path(args.model).resolve().name
    loaded = []

    def generate(batch, mode):  # the model loads on first use: a fully cached rerun never loads it
        if not loaded:
            from speech_adapter.models.speechlm import SpeechLM

            model = SpeechLM.from_pretrained(model_dir)
            model.eval()
            loaded.append(speechlm_generate_fn(model, max_new_tokens=cfg.max_new_tokens,
                                               batch_size=cfg.batch_size, text_backend=cfg.text_backend))
        return loaded[0](batch, mode)

    gens = {m: generate for m in cfg.modes}
    report = evaluate(rows, gens, system=system, out_dir=args.out, batch_size=cfg.batch_size)
    report["model"] = str(model_dir)
    paths = write_report(report, args.out)
    print(summary_markdown(report))
    print(f"report: {paths['json']}")
    return 0


def _compare(args) -> int:
    from speech_adapter.eval.report import compare

    print(compare(args.runs, args.out))
    return 0
