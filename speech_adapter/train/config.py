"""The `train:` section of a recipe: every training setting, declared once, with its help.

Defaults follow DeSTA2 (self-distillation, AdamW, cosine schedule with warmup) and fit the
offline CPU demo; the comment on each field says what to try.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from speech_adapter.audio import MAX_AUDIO_SECONDS
from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError

OBJECTIVES = ("self_distill", "kl_distill", "continuation", "task_sft")


@dataclass
class TrainConfig:
    objective: Literal["self_distill", "kl_distill", "continuation", "task_sft"] = help_field(
        "self_distill", "loss: self_distill (DeSTA2 CE on the backbone's own answers), kl_distill "
        "(KL to the text teacher, Ultravox/DiVA), continuation (BLSP), task_sft (ground truth)")
    train_file: Optional[Path] = help_field(None, "distilled JSONL rows to train on")
    dev_file: Optional[Path] = help_field(None, "JSONL rows for the periodic dev loss (optional)")
    text_file: Optional[Path] = help_field(None, "text-only replay rows (audio: null) mixed in at text_mix")
    text_mix: float = help_field(0.0, "fraction of each epoch's rows drawn from text_file (try 0.1-0.3)")
    lr: float = help_field(1e-4, "peak AdamW learning rate (adapter: 1e-4..5e-4; with LoRA 5e-5)")
    lora_lr: Optional[float] = help_field(
        None, "peak learning rate of the LLM's LoRA weights (model.lora), in their own AdamW group; "
              "None = lr. The adapter starts from nothing and wants ~1e-3, LoRA moves a working LLM "
              "and wants less (try 1e-4..2e-4)")
    betas: list[float] = help_field(default_factory=lambda: [0.9, 0.999], help="AdamW betas")
    weight_decay: float = help_field(0.0, "AdamW weight decay over trainable params (try 0.01)")
    warmup_steps: int = help_field(0, "linear warmup steps; 0 = use warmup_ratio")
    warmup_ratio: float = help_field(0.05, "warmup as a fraction of all steps (when warmup_steps=0)")
    max_steps: int = help_field(0, "optimizer steps to run; 0 = run `epochs` epochs")
    epochs: int = help_field(1, "passes over the data (when max_steps=0)")
    batch_size: int = help_field(4, "rows per micro-batch per process")
    grad_accum: int = help_field(1, "micro-batches per optimizer step")
    max_grad_norm: float = help_field(1.0, "gradient clipping norm; 0 = off")
    precision: Literal["fp32", "bf16", "auto"] = help_field(
        "fp32", "bf16 autocast or fp32; auto: bf16 where the hardware multiplies bf16 natively (a CUDA GPU "
        "with bf16, a CPU with AVX512-BF16 or AMX: a 0.5B matmul ~2.5x faster than fp32), else fp32 "
        "(a CPU without them emulates bf16, several times slower)")
    seed: int = help_field(0, "seed for init-free randomness: data order, dropout")
    length_bucketing: bool = help_field(True, "group rows of similar length into batches (less padding)")
    bucket_size: int = help_field(50, "batches per sorting window when length_bucketing is on")
    cache_encoder: bool = help_field(False, "cache frozen encoder outputs on disk; later epochs skip the encoder")
    cache_dir: Optional[Path] = help_field(None, "feature cache dir; default run_dir/feature_cache")
    feature_norm_clips: int = help_field(
        256, "clips (first in file order) whose encoder states fit the adapter's feature statistics "
             "before step 1; 0 keeps them as they are")
    kl_temperature: float = help_field(1.0, "kl_distill softmax temperature T (loss scaled by T^2; try 1-2)")
    ce_weight: float = help_field(0.0, "kl_distill: weight of the CE term mixed into the KL loss")
    hard_token_filter: float = help_field(
        0.0, "drop this fraction of response tokens the frozen backbone finds least likely (try 0.2)")
    loss_average: Literal["token", "row"] = help_field(
        "token", "how response-token losses combine: token (each token counts the same, so long "
        "answers dominate a batch) | row (each row counts the same: a one-word answer weighs as "
        "much as a description)")
    key_word_weight: float = help_field(
        1.0, "loss weight of the response tokens that name the clip's gender (woman, male, she, "
             "his ...; the row's description_fields, or meta, gives it) against 1 for the rest: the "
             "one word a gender answer turns on weighs more while the sentence stays the teacher's "
             "(1 = off; try 3-5)")
    voice_only_tasks: list[str] = help_field(
        default_factory=list, help="rows of these distilled tasks (e.g. [gender]) may be trained with "
        "the clip's Whisper channels set to their training mean, leaving only the pitch track and the "
        "voice token (model.voice_features): modality dropout, so the answer has to come from the voice, "
        "not from a clip the adapter memorized ([] = off)")
    voice_only_fraction: float = help_field(
        0.5, "with voice_only_tasks: the share of those rows trained voice-only (a fixed draw per row "
             "and seed, the same every epoch and on resume)")
    voice_only_keep: Literal["mean", "clip_average"] = help_field(
        "mean", "what a voice-only row keeps of its Whisper channels: mean (the fitted training mean: "
        "nothing of the clip but the pitch track) | clip_average (each layer's channels averaged over "
        "the clip's own frames on every frame: the voice's timbre stays, the words and their order "
        "go; with model.adapter.voice_timbre the voice token reads that same timbre)")
    voice_line_dropout: float = help_field(
        0.0, "with model.voice_line: the share of training rows that go without the line (the plain "
             "transcript line instead; a fixed draw per row and seed, the same every epoch and on "
             "resume), so the adapter's audio tokens must carry the voice themselves and agree with "
             "the line the model reads at inference (0 = every row has its line; 0.3 on the standard, one "
             "seed: held-out gender 88.8 -> 85.3 %, README session 34)")
    save_every: int = help_field(100, "checkpoint every N optimizer steps; 0 = only at the end")
    keep_last: int = help_field(3, "checkpoints to keep (oldest deleted); 0 = keep all")
    eval_every: int = help_field(0, "dev loss every N steps; 0 = off")
    eval_batches: int = help_field(8, "micro-batches of dev_file per dev-loss evaluation")
    log_every: int = help_field(10, "write metrics every N steps")
    num_workers: int = help_field(0, "DataLoader workers that load audio (0 = main process)")
    max_audio_seconds: float = help_field(MAX_AUDIO_SECONDS, "rows with longer audio are rejected (logged)")

    def validate(self) -> None:
        """Raise ConfigError naming the key of the first invalid value."""
        def check(ok: bool, key: str, msg: str):
            if not ok:
                raise ConfigError(f"{key}: {msg}, got {getattr(self, key)!r}")

        check(self.lr > 0, "lr", "must be > 0")
        check(self.lora_lr is None or self.lora_lr > 0, "lora_lr", "must be > 0 or null")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
              "must be two numbers in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(0 <= self.voice_only_fraction <= 1, "voice_only_fraction", "must be in [0, 1]")
        check(0 <= self.voice_line_dropout <= 1, "voice_line_dropout", "must be in [0, 1]")
        check(self.key_word_weight > 0, "key_word_weight", "must be > 0")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        check(self.max_steps >= 0, "max_steps", "must be >= 0")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.grad_accum >= 1, "grad_accum", "must be >= 1")
        check(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        check(self.bucket_size >= 1, "bucket_size", "must be >= 1")
        check(self.kl_temperature > 0, "kl_temperature", "must be > 0")
        check(self.ce_weight >= 0, "ce_weight", "must be >= 0")
        check(0 <= self.hard_token_filter < 1, "hard_token_filter", "must be a fraction in [0, 1)")
        check(0 <= self.text_mix < 1, "text_mix", "must be a fraction in [0, 1)")
        for key in ("save_every", "keep_last", "eval_every", "log_every", "num_workers"):
            check(getattr(self, key) >= 0, key, "must be >= 0")
        check(self.eval_batches >= 1, "eval_batches", "must be >= 1")
        check(self.max_audio_seconds > 0, "max_audio_seconds", "must be > 0")
        check(self.feature_norm_clips >= 0, "feature_norm_clips", "must be >= 0")
        if self.text_mix > 0 and self.text_file is None:
            raise ConfigError("text_mix: > 0 needs text_file (the text-only replay rows)")
        if self.eval_every > 0 and self.dev_file is None:
            raise ConfigError("eval_every: > 0 needs dev_file")

    def check_paths(self) -> None:
        """Raise ConfigError for a data path that does not exist (called before any work)."""
        if self.train_file is None:
            raise ConfigError("train.train_file: missing; give the distilled JSONL to train on")
        for key in ("train_file", "dev_file", "text_file"):
            p = getattr(self, key)
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"train.{key}: file not found: {p}")
