"""Where things live: the cache dir ($SPEECH_ADAPTER_HOME) and the offline default models."""

from __future__ import annotations

import os
from pathlib import Path

from speech_adapter.errors import ModelNotFoundError

OFFLINE_WHISPER = "offline:whisper-tiny.en"
OFFLINE_WHISPER_BASE = "offline:whisper-base"
OFFLINE_LLM = "offline:qwen2.5-coder-0.5b-instruct"  # the default backbone
OFFLINE_LLM_TINY = "offline:smollm2-135m-instruct"  # fast, no format skill: tests and the tiny recipe
OFFLINE_LLM_LARGE = "offline:qwen2.5-coder-1.5b-instruct"


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


def hub_offline() -> bool:
    """True when hub access is off: `HF_HUB_OFFLINE` (or the older `TRANSFORMERS_OFFLINE`) set to
    1/true/yes/on, as huggingface_hub itself reads them."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve_model(name_or_path: str, offline: bool | None = None) -> Path | str:
    """Turn a model reference into a local directory `from_pretrained` can load.

    - `offline:NAME`: the converted offline default in the cache dir (run `models prepare`).
    - an existing local directory: itself.
    - anything else is a hub id, fetched the way every Hugging Face tool fetches it: downloaded
      into the standard hub cache (or found there), with the token huggingface_hub finds itself
      (`HF_TOKEN`, `hf auth login`) for gated models. With hub access off (`offline=True`, or
      `HF_HUB_OFFLINE=1` when `offline` is None) only the cache is read.
    Raises `ModelNotFoundError` with a one-line reason and fix: not prepared, not cached while
    offline, hub unreachable, gated, or no such repository.
    """
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
    return _hub_snapshot(ref, hub_offline() if offline is None else offline)


def _hub_snapshot(repo_id: str, offline: bool) -> str:
    """`snapshot_download` of a hub model, its errors turned into one-line ModelNotFoundErrors."""
    from huggingface_hub import constants as hub
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        # no token argument: huggingface_hub reads HF_TOKEN / the saved login itself
        return snapshot_download(repo_id, local_files_only=offline)
    except LocalEntryNotFoundError:
        if offline:
            msg = (f"hub model '{repo_id}' is not in the Hugging Face cache ({hub.HF_HUB_CACHE}) "
                   "and hub access is off (offline mode: HF_HUB_OFFLINE); download it where the hub is "
                   f"reachable (`hf download {repo_id}`) or pass a local model directory")
        else:
            msg = (f"hub model '{repo_id}' could not be downloaded: the hub ({hub.ENDPOINT}) is "
                   "unreachable and the model is not in the Hugging Face cache "
                   f"({hub.HF_HUB_CACHE}); check the network or proxy, or pass a local model directory")
    except GatedRepoError:
        msg = (f"hub model '{repo_id}' is gated: accept its licence on its hub page, then set HF_TOKEN "
               "(or run `hf auth login`) with a token of that account")
    except RepositoryNotFoundError:
        msg = (f"hub model '{repo_id}' was not found on the hub (a typo, or a private repository: "
               "set HF_TOKEN to a token that can read it)")
    except RevisionNotFoundError as e:
        msg = f"hub model '{repo_id}': revision not found ({_first_line(e)})"
    except HFValidationError as e:
        msg = f"'{repo_id}' is neither a local directory nor a valid hub id ({_first_line(e)})"
    except HfHubHTTPError as e:
        msg = f"hub model '{repo_id}' could not be downloaded: {_first_line(e)}"
    raise ModelNotFoundError(msg)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
