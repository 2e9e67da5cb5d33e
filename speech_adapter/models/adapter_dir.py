"""The adapter directory: the one owner of its format, for every writer and reader.

Follows peft's convention: constant file names, only the trained tensors, and a config that
names the base models (refs, revisions, sha256 of their weight files) and the toolkit version.
`SpeechLM.save_adapter` (training runs, checkpoints) and `export` write it through `save`;
`SpeechLM.from_pretrained` reads it through `resolve`, `check_base_models`, `load_weights`.

    adapter_model.safetensors   the adapter's tensors (older training dirs hold adapter.safetensors,
                                still read)
    adapter_config.json         ModelConfig + taps + sizes + version (+ an export's base models, prompt, files)
    lora/                       peft's own format (adapter_config.json, adapter_model.safetensors)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

from safetensors.torch import save_file

from speech_adapter.version import __version__
from speech_adapter.config import from_dict, to_dict
from speech_adapter.errors import ConfigError, ModelNotFoundError
from speech_adapter.models import tiny_base
from speech_adapter.models.config import ModelConfig
from speech_adapter.paths import resolve_model
from speech_adapter.prompts import LEGACY_TRANSCRIPT_LINE
from speech_adapter.utils.io import atomic_path, sha256_file, write_json_atomic
from speech_adapter.utils.safety import load_safetensors, refuse_pickles

WEIGHTS = "adapter_model.safetensors"
LEGACY_WEIGHTS = "adapter.safetensors"  # the training dirs' name before one name was used everywhere
ADAPTER_CONFIG = "adapter_config.json"
LORA_DIR = "lora"
LORA_WEIGHTS = "adapter_model.safetensors"  # peft's name inside lora/
FORMAT_VERSION = 1


# ---- writing ------------------------------------------------------------------------------------

def save(model, directory, extra: dict | None = None) -> Path:
    """Write `model`'s adapter tensors, LoRA (peft format) and config to `directory`; each file
    is written to a temp name and renamed into place. `extra` adds keys to the config (an export's
    base models, prompt format, file list)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / WEIGHTS) as tmp:
        save_file(model.adapter_state_dict(), str(tmp), metadata={"format": "pt"})
    if (d / LEGACY_WEIGHTS).exists():  # one name per dir: a rewrite of an old dir drops the old file
        (d / LEGACY_WEIGHTS).unlink()
    if model.config.lora is not None:
        _save_lora_atomic(model.llm, d / LORA_DIR)
    write_json_atomic(d / ADAPTER_CONFIG, {**config_dict(model), **(extra or {})})
    return d


def config_dict(model) -> dict:
    """What every adapter_config.json holds: the ModelConfig and the sizes its weights fit."""
    emb = model.causal_lm.get_input_embeddings()
    return {"format_version": FORMAT_VERSION, "speech_adapter_version": __version__,
            "model": to_dict(model.config), "tapped_layers": list(model.encoder.layers),
            "encoder_dim": model.encoder.dim, "llm_hidden_size": emb.weight.shape[1],
            "llm_vocab_size": emb.num_embeddings}


def _save_lora_atomic(peft_model, target: Path) -> None:
    """peft's save_pretrained into a temp dir, then swapped into place (no torn lora/)."""
    tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# ---- reading ------------------------------------------------------------------------------------

def read_raw(directory) -> dict:
    """adapter_config.json as a dict (ModelNotFoundError / ConfigError name the file)."""
    path = Path(directory) / ADAPTER_CONFIG
    if not path.exists():
        raise ModelNotFoundError(f"{path}: not found; is {directory} a speech_adapter adapter dir?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ConfigError(f"{path}: missing key 'model'")
    return data


def read_config(directory) -> ModelConfig:
    """The ModelConfig stored in `directory/adapter_config.json` (ConfigError names the file)."""
    path = Path(directory) / ADAPTER_CONFIG
    model = read_raw(directory)["model"]
    adapter = model.get("adapter") if isinstance(model, dict) else None
    if isinstance(adapter, dict):  # keys saved before they existed: off, as those adapters were trained
        missing = {k: False for k in ("feature_norm", "output_norm") if k not in adapter}
        if missing:
            model = {**model, "adapter": {**adapter, **missing}}
    if isinstance(model, dict) and "transcript_line" not in model:  # the line those adapters read
        model = {**model, "transcript_line": LEGACY_TRANSCRIPT_LINE}
    try:
        return from_dict(ModelConfig, model)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _inside(root: Path, rel: str, what: str) -> Path:
    """root/rel, refusing anything that resolves outside root (absolute, '..', symlinks)."""
    p = root / rel
    if Path(rel).is_absolute() or not p.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"{root / ADAPTER_CONFIG}: files.{what} = {rel!r} points outside the "
                          "export dir; refusing to load files from elsewhere")
    return p


def weights_path(d: Path, raw: dict) -> Path:
    """The adapter tensors' file: the one the config names, else WEIGHTS, else the legacy name."""
    files = raw.get("files") or {}
    for key, rel in files.items():
        _inside(d, str(rel), key)
    if files.get("weights"):
        return _inside(d, files["weights"], "weights")
    return d / LEGACY_WEIGHTS if (d / LEGACY_WEIGHTS).exists() and not (d / WEIGHTS).exists() else d / WEIGHTS


def load_weights(model, directory, raw: dict | None = None) -> None:
    """Load the adapter tensors (and LoRA) of `directory` into `model` (built with its config)."""
    d = Path(directory)
    raw = raw if raw is not None else read_raw(d)
    weights = weights_path(d, raw)
    lora_dir = _inside(d, (raw.get("files") or {}).get("lora", LORA_DIR), "lora")
    if not weights.is_file():
        refuse_pickles(d, "adapter weights")
        raise ModelNotFoundError(f"{weights}: no adapter weights in {d} (expected {WEIGHTS})")
    saved = read_config(d).adapter
    if to_dict(saved) != to_dict(model.config.adapter):
        raise ConfigError(f"{d / ADAPTER_CONFIG}: adapter config {to_dict(saved)} differs from "
                          f"this model's {to_dict(model.config.adapter)}")
    state = load_safetensors(weights, device=str(model.device))
    missing, unexpected = model.adapter.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{weights}: tensors do not fit the adapter (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    has_lora = lora_dir.is_dir()
    if (model.config.lora is None) == has_lora:
        raise ConfigError(f"{d}: LoRA {'present' if has_lora else 'absent'} in the dir but lora is "
                          f"{'null' if model.config.lora is None else 'set'} in this model's config")
    if has_lora:
        from peft import set_peft_model_state_dict  # peft loads only for LoRA dirs

        f = lora_dir / LORA_WEIGHTS
        if not f.resolve().is_relative_to(d.resolve()):
            raise ConfigError(f"{f}: resolves outside the adapter dir; refusing")
        res = set_peft_model_state_dict(model.llm, load_safetensors(f, device=str(model.device)))
        if getattr(res, "unexpected_keys", None):
            raise ConfigError(f"{f}: unexpected LoRA tensors {res.unexpected_keys[:3]}")


def resolve(directory, *, trust_remote_code: bool = False, encoder: str | None = None,
            llm: str | None = None, dtype: str | None = None) -> tuple[Path, dict, ModelConfig]:
    """(adapter dir, raw config, ModelConfig with the caller's overrides) for an adapter dir or a
    run dir (its final adapter or latest checkpoint). trust_remote_code is never taken from the file."""
    d = Path(directory)
    if not (d / ADAPTER_CONFIG).exists():
        d = find_source(d, "auto")
    raw = read_raw(d)
    weights_path(d, raw)  # refuses file entries pointing outside d before anything loads
    changes = {"trust_remote_code": bool(trust_remote_code)}
    changes.update({k: v for k, v in (("encoder", encoder), ("llm", llm), ("dtype", dtype)) if v})
    config = dataclasses.replace(read_config(d), **changes)
    config.validate()
    return d, raw, config


# ---- where the weights of a run are ------------------------------------------------------------

def find_source(run, checkpoint: str = "auto") -> Path:
    """The adapter dir of a training run dir, a pipeline dir (train/) or an adapter dir.

    checkpoint: final (RUN/adapter), latest (newest checkpoints/step-*), step-N, or auto (final if
    present, else latest). Raises ModelNotFoundError naming what was looked for.
    """
    run = Path(run)
    if not run.is_dir():
        raise ModelNotFoundError(f"{run}: not a directory; pass an adapter dir (adapter_config.json) "
                                 "or a training run dir")
    roots = [run] + ([run / "train"] if (run / "train").is_dir() else [])
    if checkpoint in ("auto", "final"):
        for cand in [run] + [r / "adapter" for r in roots]:
            if (cand / ADAPTER_CONFIG).exists() and ((cand / WEIGHTS).exists() or (cand / LEGACY_WEIGHTS).exists()):
                return cand
        if checkpoint == "final":
            raise ModelNotFoundError(f"{run}: no final adapter (adapter/adapter_config.json); "
                                     "use --checkpoint latest or step-N")
    ckpts = []
    for r in roots:
        for d in (r / "checkpoints").glob("step-*") if (r / "checkpoints").is_dir() else []:
            m = re.fullmatch(r"step-(\d+)", d.name)
            if m and (d / ADAPTER_CONFIG).exists():
                ckpts.append((int(m.group(1)), d))
    ckpts.sort()
    if checkpoint in ("auto", "latest"):
        if ckpts:
            return ckpts[-1][1]
        raise ModelNotFoundError(f"{run}: no adapter_config.json in it, adapter/, train/adapter/ or "
                                 "checkpoints/step-*/; pass a dir written by save_adapter or a training run dir")
    m = re.fullmatch(r"step-?(\d+)", checkpoint)
    if not m:
        raise ConfigError(f"--checkpoint: {checkpoint!r} is not final, latest, auto or step-N")
    for step, d in ckpts:
        if step == int(m.group(1)):
            return d
    raise ModelNotFoundError(f"{run}: no checkpoint {checkpoint}; have {[d.name for _, d in ckpts]}")


def run_root(source: Path) -> Path:
    """The run dir a source adapter dir belongs to (…/adapter or …/checkpoints/step-N -> …)."""
    if source.name == "adapter":
        return source.parent
    if source.parent.name == "checkpoints":
        return source.parent.parent
    return source


# ---- base-model identity ------------------------------------------------------------------------

def tiny_fingerprint(which: str) -> str:
    """sha256 over the tensors of a `tiny:*` base model (fixed seed, so stable)."""
    model = tiny_base.tiny_whisper()[0] if which == "tiny:whisper" else tiny_base.tiny_llm()[0]
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def base_model_record(ref: str, hash_base: str = "auto") -> dict:
    """What identifies a base model: {ref, kind, path?, revision?, weights{file: sha256}}.

    Offline refs reuse the sha256s that `models prepare` recorded in source.json; local dirs and
    hub snapshots hash their *.safetensors (about 1 s per 500 MB). Raises ModelNotFoundError when
    the model is not on this machine.
    """
    if ref.startswith("tiny:"):
        return {"ref": ref, "kind": "tiny", "weights": {"state_dict": tiny_fingerprint(ref)}}
    path = Path(resolve_model(ref))
    rec: dict = {"ref": ref, "kind": "offline" if ref.startswith("offline:") else "local", "path": str(path)}
    if "snapshots" in path.parts and not Path(ref).expanduser().exists():
        rec.update(kind="hub", revision=path.name)  # hub cache: snapshots/<commit>
    if hash_base == "never":
        return rec
    src = read_json(path / "source.json") if rec["kind"] == "offline" else None
    if src is not None and hash_base == "auto":
        rec["revision"] = ", ".join(f"{k}=={v}" for k, v in src["source"].get("packages", {}).items())
        rec["weights"] = {k: v["sha256"] for k, v in src.get("outputs", {}).items() if "sha256" in v}
        rec["source_sha256"] = {k: v["sha256"] for k, v in src["source"]["files"].items()}
        if rec["weights"]:
            return rec
    rec["weights"] = {f.name: sha256_file(f) for f in sorted(path.glob("*.safetensors"))}
    return rec


def read_json(path: Path):
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def compare_records(saved: dict, now: dict, role: str) -> list[str]:
    """Human-readable differences between a recorded and a current base-model identity."""
    problems = []
    old, new = saved.get("weights") or {}, now.get("weights") or {}
    if not old or not new:
        return problems  # nothing recorded (or hashing off): refs alone cannot be checked
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            problems.append(f"{role} {now['ref']}: {name} sha256 {str(new.get(name))[:12]} differs from the "
                            f"recorded {str(old.get(name))[:12]}")
    return problems


def _tokenizer_problems(ref: str, placeholder: str, trust_remote_code: bool) -> list[str]:
    """Chat template and placeholder checks on the LLM tokenizer, before any weights load."""
    if ref.startswith("tiny:"):
        tok = tiny_base.tiny_llm_tokenizer()
    else:
        from transformers import AutoTokenizer  # transformers loads only when a model does

        tok = AutoTokenizer.from_pretrained(resolve_model(ref), trust_remote_code=trust_remote_code)
    problems = []
    if not getattr(tok, "chat_template", None):
        problems.append(f"llm {ref}: its tokenizer has no chat template (the adapter was trained inside one)")
    if placeholder not in tok.get_vocab():
        tok.add_tokens([placeholder], special_tokens=True)
    if len(tok(placeholder, add_special_tokens=False).input_ids) != 1:
        problems.append(f"llm {ref}: the placeholder {placeholder} does not encode to a single token")
    return problems


def _llm_hidden_size(ref: str, trust_remote_code: bool) -> int | None:
    """The LLM's hidden size from its config.json (None when it cannot be read cheaply)."""
    if ref.startswith("tiny:"):
        return None  # the tiny pair is fixed; the post-build check covers it
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(resolve_model(ref), trust_remote_code=trust_remote_code)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return getattr(cfg, "hidden_size", None)


def check_base_models(d: Path, raw: dict, config: ModelConfig, ignore_mismatch: bool) -> None:
    """Before building: the base models' tokenizer, hidden size and recorded checksums.

    A checksum mismatch is refused unless ignore_mismatch; a tokenizer without a chat template or
    one that splits the placeholder, or a different hidden size, cannot be ignored.
    """
    fatal = _tokenizer_problems(config.llm, config.placeholder, config.trust_remote_code)
    want_h, have_h = raw.get("llm_hidden_size"), _llm_hidden_size(config.llm, config.trust_remote_code)
    if want_h is not None and have_h is not None and want_h != have_h:
        fatal.append(f"llm_hidden_size {want_h} recorded, but {config.llm} has {have_h}; "
                     "the adapter's weights cannot fit")
    if fatal:
        raise ConfigError(f"{d}: cannot use these base models (not ignorable): " + "; ".join(fatal))
    problems = []
    for role, ref in (("encoder", config.encoder), ("llm", config.llm)):
        saved = (raw.get("base_models") or {}).get(role)
        if saved and saved.get("weights"):
            hash_base = "auto" if ref.startswith("offline:") else "always"
            problems += compare_records(saved, base_model_record(ref, hash_base), role)
    if problems and not ignore_mismatch:
        raise ConfigError(f"{d}: the base models differ from the ones this adapter was trained with: "
                          + "; ".join(problems) + "; pass ignore_mismatch=True (CLI: --ignore-mismatch) "
                          "to load anyway")


def check_built(model, d: Path, raw: dict, ignore_mismatch: bool) -> None:
    """After building: the recorded sizes against the built model's."""
    emb = model.causal_lm.get_input_embeddings()
    for key, have in (("llm_hidden_size", emb.weight.shape[1]), ("encoder_dim", model.encoder.dim)):
        want = raw.get(key)
        if want is not None and want != have:
            raise ConfigError(f"{d / ADAPTER_CONFIG}: {key} {want} recorded, but the base model has {have}; "
                              "the adapter's weights cannot fit (not ignorable)")
    vocab = raw.get("llm_vocab_size")
    if vocab is not None and vocab != emb.num_embeddings and not ignore_mismatch:
        raise ConfigError(f"{d / ADAPTER_CONFIG}: llm_vocab_size {vocab} recorded, the LLM has "
                          f"{emb.num_embeddings}; pass ignore_mismatch=True to load anyway")
