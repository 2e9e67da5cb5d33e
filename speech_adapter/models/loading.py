"""Load the frozen base models (Whisper, a chat LLM) from local directories, never the network.

`tiny:whisper` / `tiny:llm` are the random-weight test pair of `models.tiny_base`.

Weights load only from safetensors (`use_safetensors=True`; a dir with only pickled `.bin`
weights is refused, since unpickling can run code); remote code only when the user asks.
"""

from __future__ import annotations

import torch

from speech_adapter.models import tiny_base
from speech_adapter.paths import resolve_model
from speech_adapter.utils.safety import refuse_pickles

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_whisper(ref: str, dtype: str = "float32"):
    """(WhisperForConditionalGeneration, WhisperFeatureExtractor, WhisperTokenizer) from `ref`."""
    if ref == "tiny:whisper":
        whisper, fe, tok = tiny_base.tiny_whisper()
        return whisper.to(DTYPES[dtype]), fe, tok
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    path = resolve_model(ref)
    refuse_pickles(path, "Whisper weights")
    model = WhisperForConditionalGeneration.from_pretrained(path, dtype=DTYPES[dtype], use_safetensors=True)
    model.eval()
    return model, WhisperFeatureExtractor.from_pretrained(path), WhisperTokenizer.from_pretrained(path)


def load_llm(ref: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(AutoModelForCausalLM, AutoTokenizer) from `ref`; remote code only when asked for."""
    if ref == "tiny:llm":
        llm, tok = tiny_base.tiny_llm()
        return llm.to(DTYPES[dtype]), tok
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(ref)
    refuse_pickles(path, "LLM weights")
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok
