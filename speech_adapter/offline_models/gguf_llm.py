"""Convert a GGUF chat LLM (SmolLM2-135M-Instruct, Qwen2.5-Coder-0.5B/1.5B-Instruct) into a plain HF dir.

`transformers` reads GGUF itself (`from_pretrained(dir, gguf_file=name)`, via the `gguf`
package) and dequantizes the weights to float. The loaded model is copied into a fresh model
built from the same config and written with `save_pretrained` (safetensors), so later loads
need neither `gguf` nor the dequantization step. The tokenizer (with its chat template, which
the GGUF metadata carries) is saved beside it.
"""

from __future__ import annotations

import copy
from pathlib import Path

from speech_adapter.errors import ModelNotFoundError, SpeechAdapterError


def convert_gguf_llm(gguf_path, out_dir, dtype: str = "float32") -> dict:
    """Load `gguf_path` with transformers, save model + tokenizer into `out_dir`.

    Returns {"params", "architecture", "vocab_size"}. Raises `ModelNotFoundError` when the file
    is absent and `SpeechAdapterError` when the GGUF carries no chat template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise ModelNotFoundError(f"{gguf_path}: GGUF file not found")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    src_dir, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    if not getattr(tokenizer, "chat_template", None):
        raise SpeechAdapterError(f"{gguf_path}: the GGUF metadata has no chat template")
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch_dtype)
    config = copy.deepcopy(loaded.config)
    # The saved dir holds plain float weights: a GGUF quantization_config would make loaders
    # look for the .gguf file again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A fresh model of the same config drops anything GGUF-specific the loaded object carries.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise SpeechAdapterError(f"{gguf_path}: state dict mismatch after GGUF load "
                                 f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    del loaded
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "params": sum(p.numel() for p in fresh.parameters()),
        "architecture": type(fresh).__name__,
        "vocab_size": config.vocab_size,
    }
