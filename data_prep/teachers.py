"""`load_teacher`: the one factory of every teacher backend (transformers, ctranslate2, vllm, fake).

It sits above `teacher` (the interface and the transformers / vllm / fake backends) and
`teacher_ct2` (which builds on them), so neither imports the other's factory.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.teacher import FakeTeacher, Teacher, TeacherConfig, TransformersTeacher, VllmTeacher
from data_prep.teacher_ct2 import CTranslate2Teacher
from speech_adapter.errors import ConfigError, ModelNotFoundError
from speech_adapter.paths import resolve_model


def load_teacher(config: TeacherConfig) -> Teacher:
    """Build the teacher `config` names; raises ModelNotFoundError / ConfigError with the fix."""
    ref = config.model
    if ref.startswith("fake:"):
        return FakeTeacher.from_file(ref[len("fake:"):])
    # models.loading imports torch: kept out of `data --help` and of fake teachers
    from speech_adapter.models.loading import DTYPES, load_llm  # lazy: torch

    if config.backend == "vllm":
        return VllmTeacher(resolve_model(ref), ref, config.dtype)
    if config.backend == "ctranslate2":
        if ref.endswith(".gguf"):
            raise ConfigError("backend 'ctranslate2' converts a model dir, not a .gguf file; "
                              "use offline:NAME or a converted dir")
        return CTranslate2Teacher(resolve_model(ref), ref, compute_type=config.dtype, batch_size=config.batch_size)
    if ref.endswith(".gguf"):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only for a .gguf teacher

        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=DTYPES[config.dtype]).eval()
    else:
        model, tok = load_llm(ref, dtype=config.dtype)
    return TransformersTeacher(model, tok, ref, batch_size=config.batch_size)
