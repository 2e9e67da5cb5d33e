"""`speech-adapter export RUN OUT`: a portable, peft-style adapter directory.

An export is an adapter directory (`models.adapter_dir`, the format's one owner) whose config also
names the base models (refs, revisions, sha256 of their weight files), so
`SpeechLM.from_pretrained(OUT)` can rebuild the model anywhere the two base models exist and
refuse when they differ. Layout of OUT (written to a temp dir, renamed into place):

    adapter_model.safetensors   the adapter's tensors
    adapter_config.json         ModelConfig + base models + taps + sizes + prompt format + version
    lora/                       peft's own format (adapter_config.json, adapter_model.safetensors)
    merged_llm/                 only with --merge-lora: peft merge_and_unload -> save_pretrained
    README.md                   model card: base models, recipe, data, eval summary, how to load

The export never holds the base models (a few MB), except the optional merged LLM.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speech_adapter.config import from_dict, help_field, to_dict
from speech_adapter.errors import ConfigError
from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, student_user_message
from speech_adapter.utils.io import atomic_path, write_text_atomic

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


# ---- the export itself --------------------------------------------------------------------------

def prompt_format(model) -> dict:
    """The prompt layout the adapter was trained with (speech_adapter.prompts)."""
    ph = model.config.placeholder
    return {"system_prompt": DEFAULT_SYSTEM_PROMPT,
            "user_template": student_user_message("{instruction}", ph),
            "user_template_with_transcript": student_user_message("{instruction}", ph, "{transcript}",
                                                                  model.config.transcript_line),
            **({"voice_line": model.config.voice_line,
                "voice_words": "{voice}: male / female, {person}: 'a male speaker, a man,' / 'a female "
                               "speaker, a woman,', from the adapter's voice gender head "
                               "(SpeechLM.voice_probabilities); where it hears no speech, no voice line (a line "
                               "holding {transcript} gives way to the transcript line)"}
               if model.config.voice_line is not None else {}),
            "chat_template": "the LLM tokenizer's own", "long_audio": "chunks of <= 30 s, one placeholder each"}


def export_config_dict(model, source: Path, hash_base: str = "auto", merged: bool = False) -> dict:
    """What an export's adapter_config.json holds beyond every adapter dir's (`adapter_dir.config_dict`)."""
    from speech_adapter.models.adapter_dir import LORA_DIR, WEIGHTS, base_model_record  # lazy: torch

    cfg = model.config
    n_adapter = sum(p.numel() for p in model.adapter.parameters())
    n_lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    return {
        "export_format": EXPORT_FORMAT,
        "adapter": {**to_dict(cfg.adapter), "num_params": n_adapter, "lora_params": n_lora},
        "placeholder": cfg.placeholder,
        "prompt": prompt_format(model),
        "base_models": {"encoder": base_model_record(cfg.encoder, hash_base),
                        "llm": base_model_record(cfg.llm, hash_base)},
        "files": {"weights": WEIGHTS, **({"lora": LORA_DIR} if cfg.lora is not None else {}),
                  **({"merged_llm": MERGED_DIR} if merged else {})},
        "exported_from": str(source.resolve()),
    }


def export(run, out, config: ExportConfig | None = None, log=print) -> Path:
    """Export RUN's adapter (see `adapter_dir.find_source`) to OUT atomically; returns OUT.

    Loads the model once (both base models) to check the weights load and, with merge_lora,
    to merge. Raises ModelNotFoundError / ConfigError naming the file.
    """
    # torch and transformers load here, not when `speech-adapter --help` imports this module
    from speech_adapter.models import adapter_dir  # lazy: torch
    from speech_adapter.models.speechlm import SpeechLM  # lazy: torch

    config = config or ExportConfig()
    source = adapter_dir.find_source(run, config.checkpoint)
    out = Path(out)
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ConfigError(f"OUT {out} must not be (inside) the source {source}")
    log(f"exporting {source} -> {out}")
    model = SpeechLM.from_pretrained(source, ignore_mismatch=False)
    if config.merge_lora and model.config.lora is None:
        raise ConfigError(f"--merge-lora: {source} has no LoRA (lora is null in its config)")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        cfg = export_config_dict(model, source, config.hash_base, merged=config.merge_lora)
        adapter_dir.save(model, tmp, extra=cfg)
        write_text_atomic(tmp / MODEL_CARD, model_card({**adapter_dir.config_dict(model), **cfg}, adapter_dir.run_root(source)))
        if config.merge_lora:
            merged = model.llm.merge_and_unload()
            merged.save_pretrained(str(tmp / MERGED_DIR), safe_serialization=True)
            model.tokenizer.save_pretrained(str(tmp / MERGED_DIR))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and MERGED_DIR not in p.parts)
    log(f"exported {out} ({size / 1e6:.2f} MB without merged_llm)")
    return out


# ---- model card ---------------------------------------------------------------------------------

def _eval_summary(root: Path) -> list[str]:
    from speech_adapter.models.adapter_dir import read_json  # lazy: torch

    reports = []
    for base in (root, root.parent):
        reports += sorted(base.glob("eval/**/report.json")) + sorted(base.glob("eval*/report.json"))
    for path in dict.fromkeys(reports):
        rep = read_json(path)
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
    from speech_adapter.models.adapter_dir import read_json  # lazy: torch

    run_cfg = read_json(root / "config.json") or read_json(root.parent / "config.json") or {}
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
        "from speech_adapter.models.speechlm import SpeechLM",
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
    cfg = from_dict(ExportConfig, {"checkpoint": args.checkpoint, "merge_lora": args.merge_lora,
                                   "hash_base": args.hash_base})
    out = export(args.run, args.out, cfg, log=lambda s: print(s, file=sys.stderr))
    print(out)
    return 0


__all__ = ["ExportConfig", "export", "model_card", "MERGED_DIR"]
