"""`data import`: real corpora into corpus JSONL with 16 kHz mono wavs.

Two sources, one row format (docs/CONTRACTS.md):
- a local folder with a label file (.csv, .tsv or .jsonl) whose columns are mapped by flags
  (`--audio-column`, `--text-column`, `--speaker-column`, `--gender-column`, ...);
- a Hugging Face `datasets` dataset saved with `save_to_disk`, with an Audio column; presets
  name the column layouts of LibriSpeech, LibriTTS, VCTK, CREMA-D and Common Voice. The Audio
  column is read undecoded (`Audio(decode=False)`: bytes + path) and decoded by
  `speech_adapter.audio.load_audio`, so no torchcodec is needed and one repair/refusal policy
  applies to every source.
Every clip is re-written as 16 kHz PCM wav (atomically); bad clips/rows go to rejects.jsonl.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import tempfile
from pathlib import Path

from data_prep.config import ImportConfig
from data_prep.rows import RejectLog, done_ids, summary
from speech_adapter.audio import SAMPLE_RATE, load_audio, save_wav
from speech_adapter.errors import AudioError, ConfigError, DataError
from speech_adapter.utils.io import JsonlAppender, iter_jsonl

# field -> column name, per corpus layout as published on the Hugging Face hub
PRESETS = {
    "librispeech": {"audio": "audio", "text": "text", "speaker": "speaker_id", "id": "id"},
    "libritts": {"audio": "audio", "text": "text_normalized", "speaker": "speaker_id", "id": "id"},
    "vctk": {"audio": "audio", "text": "text", "speaker": "speaker_id", "gender": "gender",
             "accent": "accent", "age": "age"},
    "crema_d": {"audio": "audio", "text": "sentence", "speaker": "speaker_id", "gender": "gender",
                "emotion": "emotion", "age": "age"},
    "common_voice": {"audio": "audio", "text": "sentence", "speaker": "client_id", "gender": "gender",
                     "accent": "accent", "age": "age", "language": "locale"},
}
FIELDS = ("audio", "text", "speaker", "gender", "accent", "emotion", "age", "language", "id")
GENDERS = {"m": "male", "male": "male", "man": "male", "male_masculine": "male",
           "f": "female", "female": "female", "woman": "female", "female_feminine": "female"}
# CREMA-D's emotion codes, also accepted as full words
EMOTIONS = {"ang": "angry", "dis": "disgust", "fea": "fear", "hap": "happy", "neu": "neutral",
            "sad": "sad"}


def column_map(cfg: ImportConfig) -> dict[str, str]:
    """field -> column: the preset's layout overridden by explicit --*-column flags."""
    cols: dict[str, str] = {}
    if cfg.preset:
        if cfg.preset not in PRESETS:
            raise ConfigError(f"preset: unknown {cfg.preset!r}; choose from {sorted(PRESETS)}")
        cols.update(PRESETS[cfg.preset])
    for f in FIELDS:
        value = getattr(cfg, f"{f}_column")
        if value:
            cols[f] = value
    cols.setdefault("audio", "audio")
    return cols


def normalize_gender(value) -> str | None:
    return GENDERS.get(str(value).strip().lower()) if value not in (None, "") else None


def normalize_emotion(value) -> str | None:
    if value in (None, ""):
        return None
    v = str(value).strip().lower()
    return EMOTIONS.get(v, v)


def safe_id(value) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._") or "clip"


def _label_rows(path: Path, rejects):
    """(line, dict) per label-file row; malformed JSONL lines go to the rejects."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        errors: list = []
        with open(path, "rb") as f:
            numbered = [i for i, raw in enumerate(f, 1) if raw.strip()]
        rows = list(iter_jsonl(path, strict=rejects.strict, errors=errors))
        bad = {e["line"] for e in errors}
        for e in errors:
            rejects.add(e["reason"], source=str(path), line=e["line"], kind="malformed JSONL")
        lines = [n for n in numbered if n not in bad]
        yield from zip(lines, rows)
        return
    if suffix not in (".csv", ".tsv"):
        raise ConfigError(f"source: {path} is not .csv, .tsv, .jsonl or a saved dataset dir")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
        try:
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{_first_non_utf8_line(path)}: not UTF-8 text ({e.reason}); "
                            "re-save the label file as UTF-8") from None


def _first_non_utf8_line(path: Path) -> int:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 0


def _dataset_rows(path: Path, cfg: ImportConfig, audio_col: str):
    """(index, dict) per example of a saved dataset, its Audio column left undecoded."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        split = cfg.split or ("train" if "train" in ds else (next(iter(ds)) if len(ds) == 1 else None))
        if split is None or split not in ds:
            raise ConfigError(f"split: {path} has splits {list(ds)}; choose one with --split")
        ds = ds[split]
    if audio_col not in ds.column_names:
        raise ConfigError(f"audio_column: {audio_col!r} is not a column of {path} ({ds.column_names})")
    if isinstance(ds.features[audio_col], datasets.Audio):
        ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
    for i, ex in enumerate(ds):
        yield i, ex


def _materialize(value, base: Path, tmpdir: str) -> Path:
    """A path load_audio can read, from a path string or an undecoded Audio dict."""
    if isinstance(value, dict):
        if value.get("bytes"):
            name = Path(value.get("path") or "clip").suffix or ".bin"
            fd, tmp = tempfile.mkstemp(suffix=name, dir=tmpdir)
            with os.fdopen(fd, "wb") as f:
                f.write(value["bytes"])
            return Path(tmp)
        if value.get("array") is not None:
            import numpy as np
            import soundfile as sf

            fd, tmp = tempfile.mkstemp(suffix=".wav", dir=tmpdir)
            os.close(fd)
            sf.write(tmp, np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]),
                     subtype="FLOAT")
            return Path(tmp)
        value = value.get("path")
    if not value:
        raise DataError("no audio (empty audio field)")
    p = Path(str(value))
    return p if p.is_absolute() else base / p


def run_import(cfg: ImportConfig, progress: bool = True) -> dict:
    """`data import`: write out_dir/corpus.jsonl + out_dir/wavs/*.wav; resumable; rejects beside."""
    from tqdm import tqdm

    if not cfg.source or not cfg.out_dir:
        raise ConfigError("source/out_dir: give --source LABELS_OR_DATASET and --out-dir DIR")
    source = Path(cfg.source)
    if not source.exists():
        raise ConfigError(f"source: {source} does not exist")
    cols = column_map(cfg)
    out_dir = Path(cfg.out_dir)
    output = out_dir / "corpus.jsonl"
    is_dataset = source.is_dir()
    base = Path(cfg.audio_root) if cfg.audio_root else (source if is_dataset else source.parent)
    written = skipped = 0
    with RejectLog(output, "import", cfg.strict) as rejects, tempfile.TemporaryDirectory() as tmpdir:
        rows = _dataset_rows(source, cfg, cols["audio"]) if is_dataset else _label_rows(source, rejects)
        done = done_ids(output, "import")
        seen: set[str] = set()
        with JsonlAppender(output) as out:
            for n, (line, rec) in enumerate(tqdm(rows, desc="import", unit="clip", disable=not progress,
                                                 file=sys.stderr)):
                if cfg.limit and n >= cfg.limit:
                    break
                where = {"source": str(source), "line": None if is_dataset else line}
                missing = [c for f, c in cols.items() if f in ("audio", "text") and c not in rec]
                if missing:
                    rejects.add(f"missing column(s) {missing}", kind="missing column", **where)
                    continue
                raw_id = _str(rec.get(cols["id"])) if "id" in cols else None
                cid = safe_id(raw_id) if raw_id else f"{cfg.id_prefix}-{n:06d}"
                if cid in seen:
                    rejects.add(f"duplicate id {cid}", id=cid, kind="duplicate id", **where)
                    continue
                seen.add(cid)
                if cid in done:
                    skipped += 1
                    continue
                repairs: list[str] = []
                try:
                    src = _materialize(rec[cols["audio"]], base, tmpdir)
                    x = load_audio(src, max_seconds=cfg.max_seconds, allow_silence=False, repairs=repairs)
                except (AudioError, DataError) as e:
                    reason = f"example {line}: {getattr(e, 'reason', e)}" if is_dataset else str(e)
                    rejects.add(reason, id=cid, **where)
                    continue
                rel = f"wavs/{cid}.wav"
                save_wav(out_dir / rel, x, SAMPLE_RATE)  # a full disk raises OSError naming the file
                text = rec.get(cols["text"]) if "text" in cols else None
                meta = {"source": str(source), "source_audio": _source_name(rec[cols["audio"]]),
                        "speaker": _str(rec.get(cols["speaker"])) if "speaker" in cols else None,
                        "gender": normalize_gender(rec.get(cols["gender"])) if "gender" in cols else None,
                        "accent": _str(rec.get(cols["accent"])) if "accent" in cols else None,
                        "emotion": normalize_emotion(rec.get(cols["emotion"])) if "emotion" in cols else None,
                        "age": _str(rec.get(cols["age"])) if "age" in cols else None,
                        # a transcript means speech; without one the row may or may not hold any
                        "speech": True if _str(text) else None}
                if repairs:
                    meta["repairs"] = repairs
                language = _str(rec.get(cols["language"])) if "language" in cols else None
                out.write({"id": cid, "audio": rel, "sampling_rate": SAMPLE_RATE,
                           "duration": round(len(x) / SAMPLE_RATE, 4),
                           "transcript": _str(text), "language": language or cfg.language,
                           "meta": {k: v for k, v in meta.items() if v is not None}})
                written += 1
        line = summary("import", written, skipped, rejects, output)
        return {"written": written, "skipped": skipped, "rejected": dict(rejects.counts), "summary": line,
                "output": str(output)}


def _str(v) -> str | None:
    if v is None:
        return None
    v = str(v).strip()
    return v or None


def _source_name(value) -> str | None:
    if isinstance(value, dict):
        return value.get("path")
    return _str(value)
