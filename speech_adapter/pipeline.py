"""`speech-adapter run RECIPE`: the whole pipeline, each stage skipped when already complete.

    models → data → attributes → describe → transcribe → split → distill → replay → train → eval → export

Every stage writes under the recipe's output_dir and is resumable on its own (a killed run
reruns from where it stopped); a stage whose config changed reruns. This is the README's main
command: `speech-adapter run recipes/demo.yaml`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from data_prep.asr import TranscribeConfig, transcribe_corpus
from data_prep.attributes import run_attributes
from data_prep.describe import run_describe
from data_prep.distill import distill
from data_prep.importers import run_import
from data_prep.magpie import magpie
from data_prep.synth import NOT_SHAPING, synth_corpus
from speech_adapter.config import to_dict
from speech_adapter.errors import DataError
from speech_adapter.eval import suite as S
from speech_adapter.eval.real import build_real_suite
from speech_adapter.eval.report import compare, write_report
from speech_adapter.eval.runner import decoding_key, evaluate, model_digest
from speech_adapter.eval.suite import load_rows
from speech_adapter.eval.systems import speechlm_generate_fn
from speech_adapter.export import ExportConfig, export
from speech_adapter.offline_models.prepare import PrepareConfig, prepare
from speech_adapter.paths import resolve_model
from speech_adapter.recipe import load_recipe, resolved_dict
from speech_adapter.stages import StageRunner, fingerprint
from speech_adapter.templates import templates_for
from speech_adapter.utils.io import iter_jsonl, read_jsonl, sha256_file, write_json_atomic, write_jsonl_atomic

STAGES = ("models", "data", "attributes", "describe", "transcribe", "split", "distill", "replay", "train",
          "eval", "export")


def configure(parser) -> None:
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=50")
    parser.add_argument("--until", choices=STAGES, default=None, help="stop after this stage")
    parser.add_argument("--redo", action="append", default=[], choices=STAGES,
                        help="rerun this stage (and every later one) even if complete; repeatable")
    parser.add_argument("--dry-run", action="store_true", help="validate the recipe and print the plan only")


def main(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        import yaml

        print(yaml.safe_dump(resolved_dict(recipe), sort_keys=False))
        print("stages: " + " → ".join(STAGES))
        return 0
    summary = run_pipeline(recipe, until=args.until, redo=args.redo)
    print(format_summary(recipe, summary))
    return 0


def split_heldout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic train/held-out split by a hash of (seed, clip id): stable as the corpus grows.

    Clips of held-out voices (`meta.voice_split == "heldout"`, from `data synth`) are never
    trained on: they always go to the held-out side, on top of the hashed fraction.
    """
    def key(row):
        return hashlib.sha256(f"{seed}:{row['id']}".encode()).hexdigest()

    def voice_heldout(row):
        return (row.get("meta") or {}).get("voice_split") == "heldout"

    ranked = sorted((r for r in rows if not voice_heldout(r)), key=key)
    n_held = max(1, round(len(rows) * fraction)) if len(rows) > 1 else 0
    held = {r["id"] for r in rows if voice_heldout(r)} | {r["id"] for r in ranked[:n_held]}
    return [r for r in rows if r["id"] not in held], [r for r in rows if r["id"] in held]


def run_pipeline(recipe, until: str | None = None, redo: list[str] | None = None) -> dict:
    """Run the recipe's stages in order; returns {stage: summary}."""
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "recipe.resolved.json", resolved_dict(recipe))
    runner = StageRunner(run_dir, log=lambda m: print(m, file=sys.stderr, flush=True))
    p = recipe.paths()
    first_redo = min((STAGES.index(s) for s in (redo or [])), default=len(STAGES))
    results: dict[str, dict] = {}
    prev = ""  # each stage's fingerprint covers the one before it: a change reruns what follows

    def step(stage, name, rec, fn):
        nonlocal prev
        fp = fingerprint(name, _stage_config(rec, stage), prev)
        if STAGES.index(stage) >= first_redo:
            fp += f"-redo{time.time_ns()}"
        results[name] = runner.run(name, fp, lambda: fn(rec, rec.paths()))
        return fp

    shared = STAGES[: STAGES.index("train")]
    for stage in shared:
        prev = step(stage, stage, recipe, _STAGE_FUNCS[stage])
        if stage == until:
            return results
    base = prev
    suite_fps = None
    suites = list(recipe.eval.suites)
    variants = [recipe.for_variant(v) for v in recipe.variants] or [recipe]
    reports = {s: [] for s in suites}
    for rec in variants:
        tag = f":{rec.variant}" if rec.variant else ""
        prev = base
        train_fp = step("train", "train" + tag, rec, _train)
        if until == "train":
            continue
        if suite_fps is None:  # shared by every variant: built once, after the first training
            suite_fps = {}
            for s in suites:
                prev = base
                step("eval", _suite_stage("suite", s), recipe, functools.partial(_suite, suite=s))
                suite_fps[s] = step("eval", _suite_stage("eval_untrained", s), recipe,
                                    functools.partial(_eval_untrained, suite=s))
                if "untrained" in recipe.eval.systems:
                    reports[s].append(("untrained", _suite_paths(p, s)["eval"] / "untrained"))
        name = rec.variant or "trained"
        for s in suites:
            prev = suite_fps[s] + train_fp
            step("eval", _suite_stage("eval", s) + tag, rec, functools.partial(_eval_trained, suite=s))
            reports[s].append((name, _suite_paths(rec.paths(), s)["eval"] / name))
        if until == "eval":
            continue
        step("export", "export" + tag, rec, _export)
    if until != "train":
        for s in suites:
            results[_suite_stage("compare", s)] = _compare(recipe, _suite_paths(p, s), reports[s])
    return results


def _suite_stage(stage: str, suite: str) -> str:
    """Stage name of an eval step on `suite`: the held-out suite keeps the plain names."""
    return stage if suite == "heldout" else f"{suite}_{stage}"


def _suite_paths(p: dict, suite: str) -> dict:
    """`p` with suite, eval and compare moved to `suite`'s folder: the held-out suite keeps
    `<run>/eval/...`; the real and format suites go to `<run>/eval/real/...`, `<run>/eval/format/...`
    (a variant's results to `variants/NAME/eval/real/NAME`)."""
    if suite == "heldout":
        return p
    root = p["suite"].parent / suite
    return {**p, "suite": root / "suite.jsonl", "eval": p["eval"] / suite, "compare": root / "compare"}


def _unfilled(recipe, section: str, values: dict) -> dict:
    """`values` (the recipe's `section`) without the keys set to what the pipeline fills in anyway
    (`train.seed: 0` in a recipe whose seed is 0): a stage's fingerprint is the same whether or not
    such a key is written."""
    fill = recipe.fill(section)
    return {k: v for k, v in values.items() if not (k in fill and v == fill[k])}


def _stage_config(recipe, stage: str):
    data = to_dict(recipe.data)
    # a thread count or cache folder makes the same clips: changing it resynthesizes nothing
    data["synth"] = {k: v for k, v in _unfilled(recipe, "data.synth", data.get("synth") or {}).items()
                     if k not in NOT_SHAPING}
    train = _unfilled(recipe, "train", recipe.train)
    return {
        "models": [recipe.model.encoder, recipe.model.llm],
        "data": data,
        "attributes": recipe.data.attributes,
        "describe": recipe.data.describe,
        "transcribe": [recipe.model.encoder, recipe.model.dtype],
        "split": [recipe.data.heldout_fraction, recipe.seed],
        "distill": _unfilled(recipe, "distill", recipe.distill),
        "replay": to_dict(recipe.replay),
        "train": [to_dict(recipe.model), train],
        # without `suites`: adding a suite must not rerun the others
        "eval": [{k: v for k, v in to_dict(recipe.eval).items() if k != "suites"}, to_dict(recipe.model), train],
        "export": to_dict(recipe.export),
    }[stage]


# ---------------------------------------------------------------- stages


def _models(recipe, p) -> dict:
    """Prepare the offline defaults when the recipe uses them; refuse early, before any data work,
    when a named model's weights are not on this machine."""
    refs = [str(r) for r in (recipe.model.encoder, recipe.model.llm) if not str(r).startswith("tiny:")]
    offline = [r for r in refs if r.startswith("offline:")]
    if offline:
        prepare(PrepareConfig(names=offline))
    return {"models": [str(resolve_model(r)) for r in refs]}


def _data(recipe, p) -> dict:
    if recipe.data.source == "synth":
        return synth_corpus(recipe.synth_config())
    if recipe.data.source == "import":
        return run_import(recipe.import_config())
    # an existing corpus: attributes read it in place
    return {"corpus": recipe.data.corpus}


def _attributes(recipe, p) -> dict:
    return run_attributes(recipe.attributes_config(recipe.corpus_path()))


def _describe(recipe, p) -> dict:
    return run_describe(recipe.describe_config())


def _transcribe(recipe, p) -> dict:
    """Whisper's transcript of every clip (`asr_transcript`): what the speech model reads after
    the audio tokens (model.use_transcript) and what the cascade baseline answers from."""
    whisper = None
    if str(recipe.model.encoder).startswith("tiny:"):  # the random-weight test pair
        from speech_adapter.models.tiny import tiny_whisper  # lazy: torch

        whisper = tiny_whisper()
    cfg = TranscribeConfig(input=str(p["described"]), output=str(p["transcribed"]),
                           encoder=str(recipe.model.encoder), dtype=recipe.model.dtype)
    return transcribe_corpus(cfg, whisper=whisper)


def _split(recipe, p) -> dict:
    rows = load_rows(p["transcribed"])  # audio made absolute: the split files live elsewhere
    train, held = split_heldout(rows, recipe.data.heldout_fraction, recipe.seed)
    write_jsonl_atomic(p["train_clips"], train)
    write_jsonl_atomic(p["heldout_clips"], held)
    return {"train_clips": len(train), "heldout_clips": len(held)}


def _distill(recipe, p) -> dict:
    cfg = recipe.distill_config()
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    stats = distill(read_jsonl(p["train_clips"]), cfg)
    return {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}


def _replay(recipe, p) -> dict:
    if recipe.replay.magpie_candidates <= 0:
        return {"text_rows": 0}

    stats = magpie(recipe.magpie_config())
    return {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}


def _build_model(recipe):
    from accelerate.utils import set_seed

    from speech_adapter.models.speechlm import SpeechLM  # lazy: torch

    set_seed(recipe.train_config().seed)  # the adapter's init comes from the seed: runs reproduce
    return SpeechLM.build(recipe.model)


def _train(recipe, p) -> dict:
    from speech_adapter.train.loop import run_training  # lazy: torch

    train_cfg = recipe.train_config()
    if not read_jsonl(train_cfg.train_file):
        raise DataError(f"{train_cfg.train_file}: distillation kept no rows; see rejects.jsonl beside it")
    p["train"].mkdir(parents=True, exist_ok=True)
    settings = {"model": to_dict(recipe.model), "train": to_dict(train_cfg),
                "train_file_sha256": sha256_file(train_cfg.train_file),
                "text_file_sha256": sha256_file(train_cfg.text_file) if train_cfg.text_file else None}
    defaults = {"model": to_dict(type(recipe.model)()), "train": to_dict(type(train_cfg)())}
    _start_over_if_changed(p["train"], settings, defaults)
    write_json_atomic(p["train"] / "config.json", settings)
    model = _build_model(recipe)
    enc_cfg = {"encoder": recipe.model.encoder, "layers": model.encoder.layers, "dtype": recipe.model.dtype}
    status, adapter = run_training(model, train_cfg, p["train"], encoder_config=enc_cfg)
    if status == "interrupted":
        raise KeyboardInterrupt
    return {"status": status, "adapter": str(adapter)}


def _start_over_if_changed(train_dir: Path, settings: dict, defaults: dict | None = None) -> None:
    """A training dir whose checkpoints come from other settings (the recipe's model or train
    section, or the rows distilled for it, changed since) starts over: resuming it would continue,
    or finish at once with, the old run. Its encoder feature cache stays (keyed by the encoder).
    A setting an older config.json lacks (a field added since) counts as unchanged while it holds
    its default (`defaults`, same shape as `settings`; a top-level key it lacks is not compared), so a run
    made by an older version resumes, and a finished one is not trained again after an upgrade."""
    path = train_dir / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    defaults = defaults or {}
    changed = sorted(k for k in settings if k in saved and not _same_settings(saved[k], settings[k], defaults.get(k)))
    if not changed:
        return
    print(f"[train] {train_dir}: {', '.join(changed)} changed since its checkpoints; training starts over",
          flush=True)
    for name in ("checkpoints", "adapter", "metrics.jsonl", "config.json"):
        target = train_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _same_settings(saved, now, default) -> bool:
    """`now` equals `saved`, reading a key `saved` lacks as unchanged where `now` holds its default."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return saved == now
    default = default if isinstance(default, dict) else {}
    for key, value in now.items():
        if key in saved:
            if not _same_settings(saved[key], value, default.get(key)):
                return False
        elif key not in default or default[key] != value:
            return False
    return all(key in now for key in saved)


def _suite(recipe, p, suite: str = "heldout") -> dict:
    """The eval suite from held-out clips, from the shipped real clips (`suite="real"`), or from the
    held-out clips with every row under a format rule (`suite="format"`, every task a clip
    supports); refuses a training clip or a leaked unseen template."""
    ids, audio = S.training_keys([p["distilled"]])
    held = p["heldout_clips"]
    p = _suite_paths(p, suite)
    if suite == "real":  # a use_transcript model transcribes these clips itself
        rows, stats = build_real_suite(recipe.suite_config(), ids, audio)
    else:
        cfg = recipe.suite_config()
        if suite == "format":
            cfg = dataclasses.replace(cfg, constrained_fraction=1.0, bare_fraction=0.0, tasks=None)
        rows, stats = S.build_suite(S.load_rows(held), cfg, ids, audio)
    training = read_jsonl(p["distilled"]) + (read_jsonl(p["text_rows"]) if p["text_rows"].exists() else [])
    S.check_unseen_leak(templates_for(split="unseen") + rows, training)
    write_jsonl_atomic(p["suite"], rows)
    write_json_atomic(p["suite"].with_suffix(".stats.json"), stats)
    return {"suite_rows": len(rows)}


def _evaluate(recipe, p, name: str, adapter_dir: Path, modes: list[str]) -> dict:
    from speech_adapter.models.speechlm import SpeechLM  # lazy: torch

    cfg = recipe.eval
    suite = p["suite"]
    rows = load_rows(suite)
    model = SpeechLM.from_pretrained(adapter_dir)
    model.eval()
    gen = speechlm_generate_fn(model, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                               text_backend=cfg.text_backend, repetition_penalty=cfg.repetition_penalty)
    out = p["eval"] / name
    decoding = decoding_key(cfg.max_new_tokens, cfg.repetition_penalty)
    # cascade and text ceiling do not depend on the adapter: one run per suite, backbone pair and decoding
    report = evaluate(rows, {m: gen for m in modes}, system=name, out_dir=out, batch_size=cfg.batch_size,
                      cache_key={"adapter": model_digest(adapter_dir), "decoding": decoding},
                      shared_cache=suite.with_name(f"{suite.stem}.backbone.jsonl"),
                      shared_system=f"backbone:{recipe.model.encoder}+{recipe.model.llm}|{decoding}")
    report["model"] = str(adapter_dir)
    if name != "untrained":  # the scorecard flags a task not trained on that got worse
        report["trained_tasks"] = _trained_tasks(recipe)
        report["training"] = _training_keys(recipe)
    untrained = suite.parent / "untrained"  # shown beside this system in its scorecard
    write_report(report, out, peers=[untrained] if name != "untrained" and untrained.is_dir() else [])
    summary = {}
    for m, v in report["modes"].items():
        for key in ("accuracy_seen", "accuracy_unseen", "if_rate"):
            if v.get(key) is not None:
                summary[f"{m}_{key}"] = round(v[key], 3)
    return summary


def _trained_tasks(recipe) -> list[str]:
    return sorted({str(r["task"]) for r in iter_jsonl(recipe.train_config().train_file) if r.get("task")})


def _training_keys(recipe) -> dict:
    """What a variant changed, as the learn-vs-forget table groups systems (eval.learn_forget)."""
    cfg = recipe.train_config()
    return {"objective": cfg.objective, "lora_rank": recipe.model.lora.rank if recipe.model.lora else 0,
            "text_mix": cfg.text_mix, "hard_token_filter": cfg.hard_token_filter}


def _eval_untrained(recipe, p, suite: str = "heldout") -> dict:
    """The adapter at its (seeded) initialisation, with audio: the floor training must beat."""
    if "untrained" not in recipe.eval.systems or "speech" not in recipe.eval.modes:
        return {}
    untrained = p["eval"] / "untrained_adapter"  # one for every suite
    saved = untrained / "adapter_config.json"
    if not saved.exists() or json.loads(saved.read_text(encoding="utf-8"))["model"] != to_dict(recipe.model):
        _build_model(recipe).save_adapter(untrained)  # built again when the recipe's model changed
    return _evaluate(recipe, _suite_paths(p, suite), "untrained", untrained, ["speech"])


def _eval_trained(recipe, p, suite: str = "heldout") -> dict:
    """The trained adapter with audio, the backbone reading the description (the ceiling), and —
    with LoRA — the speech model on text-only prompts (text-side retention)."""
    if "trained" not in recipe.eval.systems:
        return {}
    modes = list(recipe.eval.modes)
    if recipe.model.lora is None and "text_retention" in modes:
        modes.remove("text_retention")  # without LoRA the LLM is untouched: it equals text_ceiling
    return _evaluate(recipe, _suite_paths(p, suite), recipe.variant or "trained", p["train"] / "adapter", modes)


def _compare(recipe, p, names: list[tuple[str, Path]]) -> dict:
    dirs = [d for _, d in names if (d / "report.json").exists()]
    if not dirs:
        return {}
    table = compare(dirs, p["compare"])
    print(table, file=sys.stderr)
    return {"compare": str(p["compare"])}


def _export(recipe, p) -> dict:
    if not recipe.export.enabled:
        return {"exported": False}

    out = export(p["train"], p["export"], ExportConfig(checkpoint="final", merge_lora=recipe.export.merge_lora),
                 log=lambda m: print(m, file=sys.stderr))
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    return {"export": str(out), "export_mb": round(size / 2**20, 2)}


_STAGE_FUNCS = {
    "models": _models, "data": _data, "attributes": _attributes, "describe": _describe,
    "transcribe": _transcribe, "split": _split, "distill": _distill, "replay": _replay, "train": _train, "export": _export,
}


def format_summary(recipe, results: dict) -> str:
    lines = [f"run '{recipe.name}' complete: {recipe.run_dir}"]
    for stage, summary in results.items():
        brief = ", ".join(f"{k}={v}" for k, v in list(summary.items())[:8])
        lines.append(f"  {stage:<10} {brief}")
    return "\n".join(lines)
