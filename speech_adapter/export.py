"""`speech-adapter export RUN OUT`: a portable, peft-style adapter directory.

Follows peft's save convention: constant file names, only the trained tensors, and a config
that names the base models (refs, revisions, sha256 of their weight files) and the toolkit
version, so `SpeechLM.from_pretrained(OUT)` can rebuild the model anywhere the two base models
exist and refuse when they differ. Layout of OUT (written to a temp dir, renamed into place):

    adapter_model.safetensors   the adapter's tensors (training dirs call it adapter.safetensors)
    adapter_config.json         ModelConfig + base models + taps + sizes + prompt format + version
    lora/                       peft's own format (adapter_config.json, adapter_model.safetensors)
    merged_llm/                 only with --merge-lora: peft merge_and_unload -> save_pretrained
    README.md                   model card: base models, recipe, data, eval summary, how to load

The export never holds the base models (a few MB), except the optional merged LLM.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speech_adapter.config import help_field

EXPORT_WEIGHTS = "adapter_model.safetensors"  # peft's name; SpeechLM.save_adapter writes adapter.safetensors
TRAIN_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_DIR = "lora"
MERGED_DIR = "merged_llm"
MODEL_CARD = "README.md"
EXPORT_FORMAT = "speech_adapter.export/1"


@dataclass
class ExportConfig:
    """Settings of `speech-adapter export`."""

    checkpoint: str = help_field(
        "auto", "which weights of RUN: final (RUN/adapter), latest (newest checkpoints/step-*), "
        "step-N, or auto (final if present, else latest)")
    merge_lora: bool = help_field(False, "also write merged_llm/: the LLM with LoRA merged in (hundreds of MB)")
    hash_base: Literal["auto", "always", "never"] = help_field(
        "auto", "sha256 of base-model weights: auto reuses source.json of offline models and hashes "
        "other local dirs; never records refs only (no checksum check at load)")


# ---- where the weights of a run are ------------------------------------------------------------

def find_source(run, checkpoint: str = "auto") -> Path:
    """The adapter dir to export from a training run dir, a pipeline dir (train/) or an adapter dir.

    Raises ModelNotFoundError naming what was looked for.
    """
    from speech_adapter.errors import ConfigError, ModelNotFoundError

    run = Path(run)
    if not run.is_dir():
        raise ModelNotFoundError(f"{run}: not a directory")
    roots = [run] + ([run / "train"] if (run / "train").is_dir() else [])
    if checkpoint in ("auto", "final"):
        for cand in [run] + [r / "adapter" for r in roots]:
            if (cand / ADAPTER_CONFIG).exists() and _has_weights(cand):
                return cand
        if checkpoint == "final":
            raise ModelNotFoundError(f"{run}: no final adapter (adapter/adapter_config.json); "
                                     "use --checkpoint latest or step-N")
    ckpts = []
    for r in roots:
        for d in (r / "checkpoints").glob("step-*") if (r / "checkpoints").is_dir() else []:
            m = re.fullmatch(r"step-(\d+)", d.name)
            if m and (d / ADAPTER_CONFIG).exists():
                ckpts.append((int(m.group(1)), d))
    ckpts.sort()
    if checkpoint in ("auto", "latest"):
        if ckpts:
            return ckpts[-1][1]
        raise ModelNotFoundError(f"{run}: no adapter_config.json in it, adapter/, train/adapter/ or "
                                 "checkpoints/step-*/")
    m = re.fullmatch(r"step-?(\d+)", checkpoint)
    if not m:
        raise ConfigError(f"--checkpoint: {checkpoint!r} is not final, latest, auto or step-N")
    for step, d in ckpts:
        if step == int(m.group(1)):
            return d
    raise ModelNotFoundError(f"{run}: no checkpoint {checkpoint}; have {[d.name for _, d in ckpts]}")


def _has_weights(d: Path) -> bool:
    return (d / EXPORT_WEIGHTS).exists() or (d / TRAIN_WEIGHTS).exists()


def run_root(source: Path) -> Path:
    """The run dir a source adapter dir belongs to (…/adapter or …/checkpoints/step-N -> …)."""
    if source.name == "adapter":
        return source.parent
    if source.parent.name == "checkpoints":
        return source.parent.parent
    return source


# ---- base-model identity ------------------------------------------------------------------------

def tiny_fingerprint(which: str) -> str:
    """sha256 over the tensors of a `tiny:*` base model (fixed seed, so stable)."""
    from speech_adapter.models import tiny

    model = tiny.tiny_whisper()[0] if which == "tiny:whisper" else tiny.tiny_llm()[0]
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def base_model_record(ref: str, hash_base: str = "auto") -> dict:
    """What identifies a base model: {ref, kind, path?, revision?, weights{file: sha256}}.

    Offline refs reuse the sha256s that `models prepare` recorded in source.json; local dirs and
    hub snapshots hash their *.safetensors (about 1 s per 500 MB). Raises ModelNotFoundError when
    the model is not on this machine.
    """
    from speech_adapter.paths import resolve_model
    from speech_adapter.utils.io import sha256_file

    if ref.startswith("tiny:"):
        return {"ref": ref, "kind": "tiny", "weights": {"state_dict": tiny_fingerprint(ref)}}
    path = Path(resolve_model(ref))
    rec: dict = {"ref": ref, "kind": "offline" if ref.startswith("offline:") else "local", "path": str(path)}
    if "snapshots" in path.parts and not Path(ref).expanduser().exists():
        rec.update(kind="hub", revision=path.name)  # hub cache: snapshots/<commit>
    if hash_base == "never":
        return rec
    src = _read_json(path / "source.json") if rec["kind"] == "offline" else None
    if src is not None and hash_base == "auto":
        rec["revision"] = ", ".join(f"{k}=={v}" for k, v in src["source"].get("packages", {}).items())
        rec["weights"] = {k: v["sha256"] for k, v in src.get("outputs", {}).items() if "sha256" in v}
        rec["source_sha256"] = {k: v["sha256"] for k, v in src["source"]["files"].items()}
        if rec["weights"]:
            return rec
    files = sorted(path.glob("*.safetensors"))
    rec["weights"] = {f.name: sha256_file(f) for f in files}
    return rec


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def compare_records(saved: dict, now: dict, role: str) -> list[str]:
    """Human-readable differences between a recorded and a current base-model identity."""
    problems = []
    old, new = saved.get("weights") or {}, now.get("weights") or {}
    if not old or not new:
        return problems  # nothing recorded (or hashing off): refs alone cannot be checked
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            problems.append(f"{role} {now['ref']}: {name} sha256 {str(new.get(name))[:12]} differs from the "
                            f"recorded {str(old.get(name))[:12]}")
    return problems


# ---- the export itself --------------------------------------------------------------------------

def prompt_format(model) -> dict:
    """The prompt layout the adapter was trained with (speech_adapter.prompts)."""
    from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, student_user_message

    ph = model.config.placeholder
    return {"system_prompt": DEFAULT_SYSTEM_PROMPT,
            "user_template": student_user_message("{instruction}", ph),
            "user_template_with_transcript": student_user_message("{instruction}", ph, "{transcript}"),
            "chat_template": "the LLM tokenizer's own", "long_audio": "chunks of <= 30 s, one placeholder each"}


def export_config_dict(model, source: Path, hash_base: str = "auto", merged: bool = False) -> dict:
    """adapter_config.json of an export (a superset of what SpeechLM.save_adapter writes)."""
    from speech_adapter import __version__
    from speech_adapter.config import to_dict

    cfg = model.config
    lm = model.causal_lm
    n_adapter = sum(p.numel() for p in model.adapter.parameters())
    n_lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    out = {
        "format_version": 1, "export_format": EXPORT_FORMAT, "speech_adapter_version": __version__,
        "model": to_dict(cfg), "tapped_layers": list(model.encoder.layers), "encoder_dim": model.encoder.dim,
        "llm_hidden_size": lm.get_input_embeddings().weight.shape[1],
        "llm_vocab_size": lm.get_input_embeddings().num_embeddings,
        "adapter": {**to_dict(cfg.adapter), "num_params": n_adapter, "lora_params": n_lora},
        "placeholder": cfg.placeholder,
        "prompt": prompt_format(model),
        "base_models": {"encoder": base_model_record(cfg.encoder, hash_base),
                        "llm": base_model_record(cfg.llm, hash_base)},
        "files": {"weights": EXPORT_WEIGHTS, **({"lora": LORA_DIR} if cfg.lora is not None else {}),
                  **({"merged_llm": MERGED_DIR} if merged else {})},
        "exported_from": str(source.resolve()),
    }
    return out


def export(run, out, config: ExportConfig | None = None, log=print) -> Path:
    """Export RUN's adapter (see `find_source`) to OUT atomically; returns OUT.

    Loads the model once (both base models) to check the weights load and, with merge_lora,
    to merge. Raises ModelNotFoundError / ConfigError naming the file.
    """
    from safetensors.torch import save_file

    from speech_adapter.errors import ConfigError
    from speech_adapter.inference.api import load
    from speech_adapter.utils.io import atomic_path, write_json_atomic, write_text_atomic

    config = config or ExportConfig()
    source = find_source(run, config.checkpoint)
    out = Path(out)
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ConfigError(f"OUT {out} must not be (inside) the source {source}")
    log(f"exporting {source} -> {out}")
    model = load(source, ignore_mismatch=False)
    if config.merge_lora and model.config.lora is None:
        raise ConfigError(f"--merge-lora: {source} has no LoRA (lora is null in its config)")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_file(model.adapter_state_dict(), str(tmp / EXPORT_WEIGHTS), metadata={"format": "pt"})
        if model.config.lora is not None:
            model.llm.save_pretrained(str(tmp / LORA_DIR))
        cfg = export_config_dict(model, source, config.hash_base, merged=config.merge_lora)
        write_json_atomic(tmp / ADAPTER_CONFIG, cfg)
        write_text_atomic(tmp / MODEL_CARD, model_card(cfg, run_root(source)))
        if config.merge_lora:
            merged = model.llm.merge_and_unload()
            merged.save_pretrained(str(tmp / MERGED_DIR), safe_serialization=True)
            tok = model.tokenizer
            tok.save_pretrained(str(tmp / MERGED_DIR))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and MERGED_DIR not in p.parts)
    log(f"exported {out} ({size / 1e6:.2f} MB without merged_llm)")
    return out


# ---- model card ---------------------------------------------------------------------------------

def _eval_summary(root: Path) -> list[str]:
    reports = []
    for base in (root, root.parent):
        reports += sorted(base.glob("eval/**/report.json")) + sorted(base.glob("eval*/report.json"))
    for path in dict.fromkeys(reports):
        rep = _read_json(path)
        if not isinstance(rep, dict) or not isinstance(rep.get("modes"), dict):
            continue
        lines = [f"From `{path}` ({rep.get('n_rows', '?')} rows):", "",
                 "| mode | accuracy seen | accuracy unseen | IF rate |", "|---|---|---|---|"]
        for name, m in rep["modes"].items():
            cells = [m.get(k) for k in ("accuracy_seen", "accuracy_unseen", "if_rate")]
            lines.append(f"| {name} | " + " | ".join("–" if v is None else f"{100 * v:.1f} %" for v in cells) + " |")
        return lines
    return ["No eval report was found beside this run (run `speech-adapter eval run`)."]


def model_card(cfg: dict, root: Path) -> str:
    """README.md of an export: base models, recipe, data, eval summary, how to load."""
    run_cfg = _read_json(root / "config.json") or _read_json(root.parent / "config.json") or {}
    train = run_cfg.get("train", {}) if isinstance(run_cfg, dict) else {}
    m, a = cfg["model"], cfg["adapter"]
    base = []
    for role, rec in cfg["base_models"].items():
        sums = ", ".join(f"{k} sha256 `{v[:16]}…`" for k, v in (rec.get("weights") or {}).items()) or "no checksum"
        base.append(f"- {role}: `{rec['ref']}` ({rec.get('revision', rec['kind'])}; {sums})")
    recipe = [f"- {k}: `{train[k]}`" for k in ("objective", "max_steps", "epochs", "lr", "batch_size",
                                                "grad_accum", "text_mix", "hard_token_filter", "seed")
              if k in train]
    data = [f"- {k}: `{train[k]}`" for k in ("train_file", "text_file", "dev_file") if train.get(k)]
    lora = m.get("lora")
    lines = [
        f"# speech_adapter export ({a['kind']} adapter)", "",
        "A trained speech adapter for a frozen Whisper encoder and a frozen chat LLM (DeSTA2-style "
        "self-distillation). This directory holds only the trained tensors; the base models are "
        "loaded from their own files and checked against the checksums below.", "",
        "## Base models", "", *base, "",
        "## Adapter", "",
        f"- kind `{a['kind']}`, {a['num_params']:,} parameters; encoder layers tapped {cfg['tapped_layers']}",
        "- LoRA: " + (f"rank {lora['rank']} on {lora['target_modules']} ({a['lora_params']:,} params)"
                      if lora else "none (LLM fully frozen)"),
        f"- placeholder `{cfg['placeholder']}`; speech_adapter {cfg['speech_adapter_version']}", "",
        "## Recipe", "", *(recipe or ["- (no training config found beside the run)"]), "",
        "## Data", "", *(data or ["- (not recorded)"]), "",
        "## Evaluation", "", *_eval_summary(root), "",
        "## Load", "", "```python",
        "from speech_adapter import SpeechLM",
        "m = SpeechLM.from_pretrained(\"path/to/this/dir\")",
        "print(m.ask(\"clip.wav\", \"What can you hear?\"))", "```", "",
        "or `speech-adapter chat --model path/to/this/dir --audio clip.wav \"What can you hear?\"`.", "",
    ]
    return "\n".join(lines)


# ---- CLI ----------------------------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="training run dir, pipeline output dir, or adapter dir")
    parser.add_argument("out", help="export dir to write (replaced atomically)")
    parser.add_argument("--checkpoint", default="auto",
                        help="final | latest | step-N | auto (final if present, else latest)")
    parser.add_argument("--merge-lora", action="store_true",
                        help="also write merged_llm/ (LoRA merged into the LLM, safetensors)")
    parser.add_argument("--hash-base", default="auto", choices=["auto", "always", "never"],
                        help="how base-model checksums are recorded (auto: source.json of offline models)")


def main(args) -> int:
    from speech_adapter.config import from_dict

    cfg = from_dict(ExportConfig, {"checkpoint": args.checkpoint, "merge_lora": args.merge_lora,
                                   "hash_base": args.hash_base})
    out = export(args.run, args.out, cfg, log=lambda s: print(s, file=sys.stderr))
    print(out)
    return 0


__all__ = ["ExportConfig", "export", "find_source", "base_model_record", "compare_records", "model_card",
           "EXPORT_WEIGHTS", "TRAIN_WEIGHTS", "ADAPTER_CONFIG", "LORA_DIR", "MERGED_DIR"]
