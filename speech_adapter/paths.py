"""Where things live: the cache dir ($SPEECH_ADAPTER_HOME) and the offline default models."""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_WHISPER = "offline:whisper-tiny.en"
OFFLINE_LLM = "offline:smollm2-135m-instruct"


def home() -> Path:
    """The cache dir: $SPEECH_ADAPTER_HOME, else ~/.cache/speech_adapter."""
    env = os.environ.get("SPEECH_ADAPTER_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "speech_adapter"


def models_dir() -> Path:
    return home() / "models"


def offline_model_dir(name: str) -> Path:
    """Directory of a converted offline default model, e.g. 'offline:whisper-tiny.en'."""
    if name.startswith("offline:"):
        name = name[len("offline:"):]
    return models_dir() / name


def resolve_model(name_or_path: str) -> Path | str:
    """Turn a model reference into something `from_pretrained` can load without a network.

    - `offline:NAME`: the converted offline default in the cache dir (run `models prepare`).
    - an existing local directory: itself.
    - anything else is a hub id: returned as is only if it is already in the local Hugging Face
      cache; otherwise `ModelNotFoundError` says the weights are absent and hub access is off.
    """
    from speech_adapter.errors import ModelNotFoundError

    ref = str(name_or_path)
    if ref.startswith("offline:"):
        path = offline_model_dir(ref)
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"offline model '{ref}' is not prepared at {path}; run: speech-adapter models prepare")
        return path
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(f"model path {local} is a file; give the model directory")
        return local
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelNotFoundError(f"model directory not found: {ref}")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(ref, local_files_only=True)
    except Exception:
        raise ModelNotFoundError(
            f"'{ref}' names a hub model whose weights are not on this machine, and speech_adapter "
            "never downloads at run time. Download it where a hub is reachable (e.g. "
            f"`huggingface-cli download {ref}`) and pass the local directory instead.") from None
