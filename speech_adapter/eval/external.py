"""Loaders that turn external benchmark rows into this toolkit's eval rows.

- Dynamic-SUPERB (Huang et al., 2024) layout: `audio, file, instruction, label` per row; the
  options are listed inside the instruction, so they are recovered from its text.
- Speech-IFEval (Lu et al., 2025) layout: `instruction` plus IFEval constraint ids
  (`instruction_id_list`, `kwargs`) or this toolkit's `constraints[{id, kwargs}]`; the textual
  description of the audio (`textual_audio`/`description`) feeds the text-only ceiling.

Both accept a JSONL file or a `datasets` directory written by `save_to_disk`. Audio stored inside
a dataset is written out as files under `audio_dir`, since eval rows carry paths.
"""

from __future__ import annotations

import re
from pathlib import Path

from speech_adapter.errors import DataError
from speech_adapter.eval.constraints import CHECKERS
from speech_adapter.eval.suite import resolve_audio
from speech_adapter.utils.io import iter_jsonl

# IFEval instruction ids -> (our id, kwargs mapper)
_REL = {"less than": ("<=", -1), "at most": ("<=", 0), "at least": (">=", 0), "exactly": ("==", 0)}


def _relation(kw: dict, n_key: str) -> dict:
    rel, shift = _REL.get(str(kw.get("relation", "at most")).lower(), ("<=", 0))
    return {"n": int(kw[n_key]) + shift, "relation": rel}


IFEVAL_IDS = {
    "detectable_format:json_format": ("json", lambda kw: {"lenient": True}),
    "change_case:english_lowercase": ("lowercase", lambda kw: {}),
    "change_case:english_capital": ("uppercase", lambda kw: {}),
    "startend:quotation": ("quoted", lambda kw: {}),
    "detectable_format:title": ("title", lambda kw: {}),
    "startend:end_checker": ("ends_with", lambda kw: {"suffix": kw["end_phrase"]}),
    "startend:start_checker": ("starts_with", lambda kw: {"prefix": kw.get("start_phrase") or kw["prefix"]}),
    "punctuation:no_comma": ("no_comma", lambda kw: {}),
    "length_constraints:number_words": ("num_words", lambda kw: _relation(kw, "num_words")),
    "length_constraints:number_sentences": ("num_sentences", lambda kw: _relation(kw, "num_sentences")),
    "detectable_format:number_bullet_lists": ("num_bullets", lambda kw: {"n": int(kw["num_bullets"]),
                                                                          "relation": "=="}),
}

_OPTION_PATTERNS = [
    r"answer with one of:\s*(?P<o>[^.\n]+)",
    r"choose (?:one )?from:?\s*(?P<o>[^.\n]+)",
    r"options?:\s*(?P<o>[^.\n]+)",
    r"the answer (?:could|should|can|must) be(?: one of)?:?\s*(?P<o>[^.\n]+)",
]


def options_from_instruction(instruction: str) -> list[str] | None:
    """Options listed in a Dynamic-SUPERB style instruction ("... could be A, B, or C."), or None."""
    for pat in _OPTION_PATTERNS:
        m = re.search(pat, instruction or "", re.IGNORECASE)
        if m:
            parts = re.split(r",\s*(?:or\s+)?|\s+or\s+|\s*/\s*", m.group("o").strip())
            opts = [p.strip().strip("\"'`") for p in parts if p.strip().strip("\"'`")]
            if len(opts) >= 2:
                return opts
    return None


def _read(path) -> list[dict]:
    """Rows from a JSONL file or a `save_to_disk` dir (audio kept undecoded: bytes + path)."""
    path = Path(path)
    if path.is_file():
        return list(iter_jsonl(path))
    if not path.is_dir():
        raise DataError(f"{path}: not a JSONL file or a datasets directory")
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises several types for a non-dataset dir
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = datasets.concatenate_datasets([ds[k] for k in sorted(ds)])
    for name, feat in ds.features.items():
        if isinstance(feat, datasets.Audio):
            ds = ds.cast_column(name, datasets.Audio(decode=False))
    return [dict(r) for r in ds]


def _audio_path(value, row_id: str, base: Path, audio_dir: Path | None) -> str | None:
    """A file path for the row's audio: a path as is, or dataset bytes/arrays written to audio_dir."""
    if value is None:
        return None
    if isinstance(value, str):
        return resolve_audio(value, base)
    if isinstance(value, dict):
        if value.get("bytes"):
            if audio_dir is None:
                raise DataError(f"row {row_id}: audio is stored in the dataset; pass audio_dir to write it out")
            suffix = Path(value.get("path") or "x.wav").suffix or ".wav"
            out = audio_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', row_id)}{suffix}"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(value["bytes"])
            return str(out.resolve())
        if value.get("array") is not None:
            if audio_dir is None:
                raise DataError(f"row {row_id}: audio is stored in the dataset; pass audio_dir to write it out")
            import numpy as np
            import soundfile as sf

            out = audio_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', row_id)}.wav"
            out.parent.mkdir(parents=True, exist_ok=True)
            sf.write(out, np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]))
            return str(out.resolve())
        if value.get("path"):
            return resolve_audio(value["path"], base)
    raise DataError(f"row {row_id}: cannot read audio field {type(value).__name__}")


def load_dynamic_superb(path, task: str | None = None, audio_dir=None) -> list[dict]:
    """Eval rows from Dynamic-SUPERB rows (`audio, file, instruction, label`)."""
    path = Path(path)
    base = path.parent if path.is_file() else path
    audio_dir = Path(audio_dir) if audio_dir else None
    name = task or path.stem
    out = []
    for i, row in enumerate(_read(path)):
        missing = [k for k in ("instruction", "label") if row.get(k) in (None, "")]
        if missing or (row.get("audio") is None and not row.get("file")):
            raise DataError(f"{path}: row {i + 1} lacks {', '.join(missing) or 'audio/file'}")
        rid = str(row.get("id") or row.get("file") or i)
        options = options_from_instruction(row["instruction"])
        out.append({
            "id": f"{name}::{rid}", "clip_id": rid, "task": name,
            "audio": _audio_path(row.get("audio") or row.get("file"), rid, base, audio_dir),
            "transcript": row.get("transcript"), "description": row.get("description"),
            "meta": {}, "instruction": row["instruction"], "template_id": f"{name}.external",
            "split": "unseen", "kind": "plain", "constraints": [], "options": options,
            "label": str(row["label"]), "metric": "option" if options else "exact",
        })
    return out


def _constraints(row: dict, where: str) -> list[dict]:
    if row.get("constraints") is not None:
        cons = row["constraints"]
        for c in cons:
            if c.get("id") not in CHECKERS:
                raise DataError(f"{where}: unknown constraint id {c.get('id')!r}")
        return cons
    ids = row.get("instruction_id_list") or []
    kwargs = row.get("kwargs") or [{}] * len(ids)
    out = []
    for cid, kw in zip(ids, kwargs):
        if cid not in IFEVAL_IDS:
            raise DataError(f"{where}: IFEval constraint {cid!r} has no checker here; "
                            f"supported: {', '.join(IFEVAL_IDS)}")
        ours, conv = IFEVAL_IDS[cid]
        try:
            out.append({"id": ours, "kwargs": conv({k: v for k, v in (kw or {}).items() if v is not None})})
        except KeyError as e:
            raise DataError(f"{where}: constraint {cid!r} lacks kwarg {e}") from None
    return out


def load_speech_ifeval(path, audio_dir=None) -> list[dict]:
    """Eval rows from Speech-IFEval style rows (instruction + constraints); metric per row."""
    path = Path(path)
    base = path.parent if path.is_file() else path
    audio_dir = Path(audio_dir) if audio_dir else None
    out = []
    for i, row in enumerate(_read(path)):
        where = f"{path}: row {i + 1}"
        if not row.get("instruction"):
            raise DataError(f"{where} lacks instruction")
        rid = str(row.get("id") or i)
        audio = row.get("audio") or row.get("audio_filepath") or row.get("file")
        label = row.get("label")
        options = row.get("options") or options_from_instruction(row["instruction"])
        task = row.get("task") or row.get("dataset") or "speech_ifeval"
        out.append({
            "id": f"{task}::{rid}", "clip_id": rid, "task": task,
            "audio": _audio_path(audio, rid, base, audio_dir),
            "transcript": row.get("transcript"),
            "description": row.get("description") or row.get("textual_audio"),
            "meta": {}, "instruction": row["instruction"], "template_id": f"{task}.external",
            "split": "unseen", "kind": "constrained", "constraints": _constraints(row, where),
            "options": options, "label": None if label is None else str(label),
            "metric": ("option" if options else "exact") if label is not None else "open",
        })
    return out
