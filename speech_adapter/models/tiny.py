"""Tiny random-weight SpeechLMs for tests and benchmarks: no files, no network, seconds to build.

The base models come from `models.tiny_base` (fixed seed, so `tiny:whisper` / `tiny:llm` refs
rebuild identically in `SpeechLM.build`); `seed` in `tiny_speechlm` only seeds the adapter /
LoRA init.
"""

from __future__ import annotations

import torch

from speech_adapter.models.config import AdapterConfig, LoraConfig, ModelConfig
from speech_adapter.models.speechlm import SpeechLM
from speech_adapter.models.tiny_base import BASE_SEED, CHATML, tiny_llm, tiny_llm_tokenizer, tiny_whisper

__all__ = ["BASE_SEED", "CHATML", "tiny_config", "tiny_llm", "tiny_llm_tokenizer", "tiny_speechlm", "tiny_whisper"]


def tiny_config(adapter: str = "qformer", lora: bool = False, **adapter_overrides) -> ModelConfig:
    """A ModelConfig naming the tiny pair, with small adapter sizes."""
    sizes = dict(num_queries=4, qformer_layers=1, qformer_heads=4, stack_factor=4, mlp_hidden=64)
    sizes.update(adapter_overrides)
    return ModelConfig(encoder="tiny:whisper", llm="tiny:llm", adapter=AdapterConfig(kind=adapter, **sizes),
                       lora=LoraConfig(rank=4, alpha=8.0, dropout=0.0) if lora else None)


def tiny_speechlm(adapter: str = "qformer", lora: bool = False, seed: int = 0, **adapter_overrides) -> SpeechLM:
    """A random-weight SpeechLM for tests and benchmarks (adapter/LoRA init seeded by `seed`)."""
    config = tiny_config(adapter, lora, **adapter_overrides)
    whisper, fe, wtok = tiny_whisper()
    llm, tok = tiny_llm()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SpeechLM(config, whisper, fe, llm, tok, whisper_tokenizer=wtok)
