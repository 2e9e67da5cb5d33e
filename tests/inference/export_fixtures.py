"""Shared builders for the export / inference tests: tiny trained-looking models and clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SR = 16000


def perturbed_tiny(lora: bool = False, seed: int = 3, **kw):
    """A tiny SpeechLM whose adapter (and LoRA B, which peft inits to 0) hold non-trivial values."""
    from speech_adapter.models.tiny import tiny_speechlm

    m = tiny_speechlm(lora=lora, seed=seed, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in m.named_parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return m.eval()


def make_run(model, run: Path, eval_report: bool = True) -> Path:
    """A training run dir like train/ writes: adapter/, checkpoints/step-*/, config.json, eval report."""
    model.save_adapter(run / "adapter")
    for step in (2, 4):
        model.save_adapter(run / "checkpoints" / f"step-{step:05d}")
        (run / "checkpoints" / f"step-{step:05d}" / "training_state").mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"objective": "self_distill", "lr": 0.001,
                                                           "train_file": "distilled.jsonl"}}))
    if eval_report:
        (run / "eval").mkdir()
        (run / "eval" / "report.json").write_text(json.dumps({"n_rows": 12, "modes": {
            "speech": {"accuracy_seen": 0.5, "accuracy_unseen": 0.25, "if_rate": 0.75}}}))
    return run


def clip(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def write_wav(path: Path, seconds: float = 1.5, seed: int = 0) -> Path:
    import soundfile as sf

    sf.write(str(path), clip(seconds, seed), SR)
    return path


def save_local_pair(root: Path, hidden: int = 32, chat_template: bool = True, bump: float = 0.0):
    """Tiny Whisper + LLM saved as local HF dirs (root/w, root/l), so refs are paths with files."""
    from speech_adapter.models.tiny import tiny_llm, tiny_whisper

    w, fe, wt = tiny_whisper()
    for obj in (w, fe, wt):
        obj.save_pretrained(root / "w")
    llm, tok = tiny_llm(hidden=hidden)
    if bump:
        with torch.no_grad():
            llm.lm_head.weight.add_(bump)
    if not chat_template:
        tok.chat_template = None
    llm.save_pretrained(root / "l")
    tok.save_pretrained(root / "l")
    if not chat_template:
        (root / "l" / "chat_template.jinja").unlink(missing_ok=True)
    return str(root / "w"), str(root / "l")
