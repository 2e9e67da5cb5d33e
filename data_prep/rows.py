"""Row plumbing shared by the data_prep commands: audio paths, rejects, resume, summaries.

Every command that reads audio or JSONL sends each bad item to `rejects.jsonl` beside its
output (`{id?, source?, line?, stage, reason}`, docs/CONTRACTS.md) and carries on; with
`strict` the first bad item raises instead. Outputs are appended durably (`JsonlAppender`), and
a rerun skips ids already in the output or the rejects, so a killed job resumes without
duplicates or lost rows.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

from speech_adapter.errors import DataError
from speech_adapter.utils.io import JsonlAppender, iter_jsonl, repair_torn_tail

REJECTS_NAME = "rejects.jsonl"


def audio_path(row: dict, jsonl_path) -> Path:
    """The row's audio as a path; relative paths resolve against the JSONL's directory."""
    p = Path(str(row["audio"]))
    return p if p.is_absolute() else Path(jsonl_path).parent / p


def rejects_path(output) -> Path:
    return Path(output).parent / REJECTS_NAME


class RejectLog:
    """Collect bad items into rejects.jsonl and count them; raise at the first when strict."""

    def __init__(self, output, stage: str, strict: bool = False, error_cls=DataError):
        self.path = rejects_path(output)
        self.stage = stage
        self.strict = strict
        self.error_cls = error_cls
        self.counts: collections.Counter = collections.Counter()
        self._out: JsonlAppender | None = None
        self._seen: set[tuple] = set()  # rejects already on disk: a rerun does not repeat them
        if self.path.exists():
            repair_torn_tail(self.path)
            self._seen = {(r.get("id"), r.get("source"), r.get("line"), r.get("stage"))
                          for r in iter_jsonl(self.path, strict=False)}

    def add(self, reason: str, *, id=None, source=None, line=None, kind: str | None = None,
            fields: dict | None = None) -> None:
        """Record one reject; `kind` is the short category counted in the summary (and written
        with `fields`, the structured facts a stage's stats read back)."""
        if self.strict:
            where = f"{source}:{line}: " if source and line else (f"{source}: " if source else "")
            raise self.error_cls(f"{where}{reason}" + (f" (id {id})" if id else ""))
        row = {k: v for k, v in (("id", id), ("source", source), ("line", line)) if v is not None}
        row.update(stage=self.stage, reason=reason)
        if fields:
            row.update({"kind": kind, **fields} if kind else fields)
        self.counts[kind or _kind(reason)] += 1
        if (id, source, line, self.stage) in self._seen:
            return
        self._seen.add((id, source, line, self.stage))
        if self._out is None:
            self._out = JsonlAppender(self.path)
        self._out.write(row)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _kind(reason: str) -> str:
    for key in ("file not found", "empty file", "not a readable", "no audio samples", "too short",
                "too long", "silent", "NaN", "malformed JSONL", "missing"):
        if key.lower() in reason.lower():
            return key
    return reason.split(":")[-1].strip()[:40]


def read_repaired(path) -> list[dict]:
    """The rows of a JSONL a killed run may have left with a torn last line ([] if absent)."""
    path = Path(path)
    if not path.exists():
        return []
    repair_torn_tail(path)
    return list(iter_jsonl(path, strict=False))


def done_ids(output, stage: str) -> set[str]:
    """Ids already written to `output` or rejected at `stage` (what a rerun must skip)."""
    done = {str(r["id"]) for r in read_repaired(output) if "id" in r}
    done |= {str(r["id"]) for r in read_repaired(rejects_path(output)) if "id" in r and r.get("stage") == stage}
    return done


def read_rows(path, rejects: RejectLog) -> list[dict]:
    """Rows of an input JSONL; malformed lines and rows without id/audio go to the rejects."""
    errors: list[dict] = []
    rows = []
    seen_lines = set()
    for row in iter_jsonl(path, strict=rejects.strict, errors=errors):
        rows.append(row)
    for e in errors:
        if e["line"] not in seen_lines:
            seen_lines.add(e["line"])
            rejects.add(e["reason"], source=str(path), line=e["line"], kind="malformed JSONL")
    good = []
    for i, row in enumerate(rows):
        missing = [k for k in ("id", "audio") if not row.get(k)]
        if missing:
            rejects.add(f"row {i + 1} lacks {', '.join(missing)}", id=row.get("id"),
                        source=str(path), kind="missing keys")
            continue
        good.append(row)
    return good


def summary(name: str, written: int, skipped: int, rejects: RejectLog, output) -> str:
    """One line: what the run wrote, what it skipped as done, and the reject counts by kind."""
    rej = sum(rejects.counts.values())
    parts = [f"{name}: wrote {written} rows to {output}", f"{skipped} already done (written or rejected)"]
    if rej:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(rejects.counts.items()))
        parts.append(f"{rej} rejected ({kinds}) -> {rejects.path}")
    else:
        parts.append("0 rejected")
    return "; ".join(parts)


def rebase_audio(row: dict, input_jsonl, output_jsonl) -> dict:
    """Rewrite a relative `audio` path so it still resolves from the output JSONL's directory."""
    audio = row.get("audio")
    if not audio or Path(str(audio)).is_absolute():
        return row
    src_dir, dst_dir = Path(input_jsonl).parent.resolve(), Path(output_jsonl).parent.resolve()
    if src_dir == dst_dir:
        return row
    return dict(row, audio=os.path.relpath(src_dir / str(audio), dst_dir))


def pending_rows(cfg, rejects, stage: str) -> tuple[list[dict], int]:
    """(rows still to do, rows skipped): the rows of `cfg.input` (malformed ones to `rejects`),
    cut to `cfg.limit`, less those already in `cfg.output` or rejected there by `stage`."""
    rows = read_rows(cfg.input, rejects)
    if cfg.limit:
        rows = rows[: cfg.limit]
    done = done_ids(cfg.output, stage)
    todo = [r for r in rows if str(r["id"]) not in done]
    return todo, len(rows) - len(todo)
