"""The `ctranslate2` teacher backend: the same LLM, converted once to CTranslate2, for fast CPU generation.

CTranslate2 (OpenNMT) runs decoder-only transformers with its own fused CPU kernels; its
`TransformersConverter` reads a Hugging Face dir (Qwen2, Llama, … ) and writes `model.bin`. With
`compute_type: float32` greedy answers match `transformers` `generate` (the agreement is measured in
benchmarks/teacher_generation.py); `int8` is faster still and approximate. The conversion is
cached beside the offline models and redone when the source weights change. Decoding is where
CTranslate2 wins; sampled answers (SSR retries, whose per-row seeds CTranslate2 cannot take)
and option scoring (prefill, where `transformers` reuses each prompt's KV cache) go through
`transformers`, loaded on first use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from data_prep.teacher import Sampling, TransformersTeacher, _ChatTemplateTeacher, stop_token_ids
from speech_adapter.errors import ConfigError
from speech_adapter.paths import models_dir
from speech_adapter.utils.io import atomic_path, write_json_atomic

STAMP = "converted_from.json"
COMPUTE_TYPES = ("float32", "int8", "int8_float32", "bfloat16")


def _source_stamp(hf_dir: Path) -> dict:
    """What identifies the source weights: each weights file's size and mtime."""
    files = sorted(p for p in hf_dir.iterdir() if p.suffix in (".safetensors", ".bin") or p.name == "config.json")
    return {"source": str(hf_dir.resolve()),
            "files": {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in files}}


def ct2_model_dir(hf_dir, quantization: str = "float32") -> Path:
    """A CTranslate2 conversion of the HF model at `hf_dir` (converted once, atomically, then cached)."""
    import ctranslate2

    hf_dir = Path(hf_dir)
    out = models_dir() / "ctranslate2" / f"{hf_dir.name}-{quantization}"
    stamp = _source_stamp(hf_dir)
    try:
        if json.loads((out / STAMP).read_text()) == stamp:
            return out
    except (OSError, ValueError):
        pass
    with atomic_path(out) as tmp:
        ctranslate2.converters.TransformersConverter(str(hf_dir), load_as_float16=False).convert(
            str(tmp), quantization=quantization, force=True)
        cfg = json.loads((tmp / "config.json").read_text())
        if cfg.get("bos_token") is None:  # CTranslate2 refuses a null token; prompts come tokenized anyway
            cfg["bos_token"] = cfg.get("eos_token")
            write_json_atomic(tmp / "config.json", cfg)
        write_json_atomic(tmp / STAMP, stamp)
    return out


class CTranslate2Teacher(_ChatTemplateTeacher):
    """Batched CTranslate2 greedy generation; same prompts and stop tokens as the `transformers`
    backend, which it uses for sampling and scoring."""

    def __init__(self, hf_dir, model_id: str, compute_type: str = "float32", batch_size: int = 8,
                 threads: int | None = None):
        import ctranslate2
        from transformers import AutoTokenizer

        if compute_type not in COMPUTE_TYPES:
            raise ConfigError(f"ctranslate2 compute type {compute_type!r} is not one of {list(COMPUTE_TYPES)}")
        self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        self.model_id = model_id
        self.hf_dir = Path(hf_dir)
        self.batch_size = batch_size
        self._hf: TransformersTeacher | None = None
        threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        self.generator = ctranslate2.Generator(str(ct2_model_dir(hf_dir, compute_type)), device="cpu",
                                               compute_type=compute_type, intra_threads=threads)
        self.stop_ids = stop_token_ids(self.tokenizer)

    def _tokens(self, text: str) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate_raw(self, texts, n=1, sampling=None, seeds=None):
        sampling = sampling or Sampling()
        if sampling.do_sample:
            # CTranslate2's sampling RNG lives in its worker threads and takes no per-row seed;
            # sampled retries go through `transformers` so they stay seeded and reproducible.
            return self._sampler().generate_raw(texts, n, sampling, seeds)
        if n > 1:
            raise ValueError("greedy decoding gives one answer; use do_sample=True for n > 1")
        return [[text] for text, _ in self.generate_greedy(texts, sampling.max_new_tokens)]

    def generate_greedy(self, texts: list[str], max_new_tokens: int,
                        stop_ids: list[int] | None = None) -> list[tuple[str, str]]:
        """(reply, stop) per raw text prompt, greedy; stop is "eos" or "length" (cut at
        `max_new_tokens`). `stop_ids` replaces the tokenizer's stop set (to match another decoder)."""
        res = self.generator.generate_batch(
            [self._tokens(t) for t in texts], sampling_topk=1, max_length=max_new_tokens,
            include_prompt_in_result=False, end_token=list(stop_ids or self.stop_ids),
            max_batch_size=self.batch_size)
        # the end token is not part of the result: a full-length result never met one
        return [(self.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip(),
                 "length" if len(r.sequences_ids[0]) >= max_new_tokens else "eos") for r in res]

    def _sampler(self) -> TransformersTeacher:
        if self._hf is None:
            from speech_adapter.models.loading import load_llm  # lazy: torch

            model, tok = load_llm(str(self.hf_dir), dtype="float32")
            self._hf = TransformersTeacher(model, tok, self.model_id, batch_size=self.batch_size)
        return self._hf

    def score_raw(self, texts: list[str], replies: list[list[str]]) -> list[list[float]]:
        """Summed log-probabilities of each reply's tokens after its (chat-formatted) text.

        Scoring is all prefill, where CTranslate2 is no faster, and its `score_batch` runs every
        (prompt + option) whole; `transformers` runs each prompt once and reuses its KV cache for
        every option, so scoring goes there."""
        return self._sampler().score_raw(texts, replies)
