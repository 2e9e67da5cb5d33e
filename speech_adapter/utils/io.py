"""Atomic writes, JSONL reading with line-precise errors, resumable appends, checksums."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from speech_adapter.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed onto `path` (file or dir).

    Nothing is ever visible under the final name half-written. On error the temp is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / ("payload" + suffix)
    try:
        yield target
        if path.is_dir() and target.is_dir():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path, obj, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path, rows) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
    return n


def iter_jsonl(path, strict: bool = True, errors: list | None = None) -> Iterator[dict]:
    """Yield the rows of a JSONL file.

    A malformed line raises `DataError` naming file and line when `strict`; otherwise it is
    recorded in `errors` as {"line", "reason"} and skipped. A torn last line (a writer killed
    mid-line) is treated the same way. Blank lines are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except (UnicodeDecodeError, ValueError) as e:
                reason = f"{path}:{lineno}: malformed JSONL line ({e})"
                if strict:
                    raise DataError(reason) from None
                if errors is not None:
                    errors.append({"line": lineno, "reason": reason})
                continue
            yield row


def read_jsonl(path, strict: bool = True, errors: list | None = None) -> list[dict]:
    return list(iter_jsonl(path, strict=strict, errors=errors))


class JsonlAppender:
    """Append rows to a JSONL file durably, for resumable jobs.

    On open, a torn trailing line left by a killed writer is cut off, so the file always holds
    whole rows. Each `write` flushes and fsyncs, so a row is either fully there or absent.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def repair_torn_tail(path) -> None:
    """Cut a trailing partial line (no newline) off a JSONL file, if any."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        f.truncate(cut)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
