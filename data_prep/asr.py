"""`data transcribe`: Whisper's own transcript of every clip, as `asr_transcript`.

DeSTA2 puts the encoder's transcript after the audio tokens (`model.use_transcript`), so content
questions ride on the words and the adapter carries what words cannot: voice, prosody, sound.
The transcript must be the one the model will make at inference, not the corpus' ground truth:
the teacher reads the truth in its description, the student reads Whisper's words (errors
included), in training as in evaluation. The cascade baseline (Whisper's transcript → the same
LLM, no adapter) reads the same field.

Transcribed once per clip and kept in the row: a rerun reuses every row that already has one
(keyed by clip id and audio path), so the stage costs nothing the second time. Each finished
batch is appended to `<output>.partial.jsonl` as it lands, so a killed run resumes from there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from speech_adapter.audio import SAMPLE_RATE, load_audio
from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError, DataError
from speech_adapter.eval.suite import resolve_audio
from speech_adapter.paths import OFFLINE_WHISPER
from speech_adapter.utils.io import JsonlAppender, iter_jsonl, write_jsonl_atomic

FIELD = "asr_transcript"
# Whisper writes ~3-4 tokens a second of fast English speech: 8 + 6/s leaves room for it
TOKENS_BASE, TOKENS_PER_SECOND = 8, 6.0


@dataclasses.dataclass
class TranscribeConfig:
    """Greedy Whisper transcripts of a corpus' clips."""

    input: str = help_field("", "corpus or described JSONL")
    output: str = help_field("", "the same rows with `asr_transcript` added")
    encoder: str = help_field(OFFLINE_WHISPER, "Whisper checkpoint: offline:NAME, a local dir, or a hub id")
    dtype: str = help_field("float32", "Whisper dtype (fp32 is fastest on CPU)")
    batch_size: int = help_field(8, "clips per decode call")
    max_new_tokens: int = help_field(128, "longest transcript in tokens")

    def validate(self):
        if not self.input or not self.output:
            raise ConfigError("input and output: both are required")
        if self.batch_size < 1:
            raise ConfigError("batch_size: must be >= 1")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens: must be >= 1")


def _key(row: dict, base: Path | None = None) -> tuple:
    return str(row.get("id")), resolve_audio(row.get("audio"), base)


def _partial(output: Path) -> Path:
    return output.with_name(output.name + ".partial.jsonl")


def _previous(path: Path) -> dict[tuple, str]:
    """Transcripts an earlier run already wrote, in the output or in its partial file (a torn
    last line of a killed run is skipped)."""
    done = {}
    for f in (path, _partial(path)):
        if f.exists():
            for row in iter_jsonl(f, strict=False, errors=[]):
                if isinstance(row.get(FIELD), str):
                    done[_key(row, f.parent)] = row[FIELD]
    return done


def _load(row: dict, base: Path):
    path = resolve_audio(row["audio"], base)
    try:
        return load_audio(path)
    except Exception as e:  # noqa: BLE001 — reported with the clip's name
        raise DataError(f"{row.get('id')}: cannot read {path} for transcription: {e}") from e


def _seconds(row: dict, base: Path) -> float:
    """A clip's length from its header (soundfile), else by decoding it; an unreadable clip raises
    `DataError` naming it before any clip is transcribed."""
    import soundfile as sf

    try:
        return float(sf.info(str(resolve_audio(row["audio"], base))).duration)
    except Exception:  # noqa: BLE001 — a format soundfile cannot open: decode it (or fail, named)
        return len(_load(row, base)) / SAMPLE_RATE


def transcribe_corpus(cfg: TranscribeConfig, whisper=None, progress: bool = True) -> dict:
    """Write `cfg.output`: every row of `cfg.input` with its Whisper transcript; returns stats.

    `whisper` = (model, feature_extractor, tokenizer) to reuse loaded weights (tests, pipeline).
    Rows without audio pass through unchanged; unreadable audio raises `DataError` naming it.
    """
    from tqdm import tqdm

    from speech_adapter.models.encoder import transcribe  # lazy: torch

    cfg.validate()
    src, out = Path(cfg.input), Path(cfg.output)
    rows = list(iter_jsonl(src))
    done = _previous(out)
    for row in rows:  # a row that carries one already (an earlier stage, the user's own) keeps it
        if isinstance(row.get(FIELD), str):
            done.setdefault(_key(row, src.parent), row[FIELD])
    todo = [r for r in rows if r.get("audio") and _key(r, src.parent) not in done]
    if todo:
        if whisper is None:
            from speech_adapter.models.loading import load_whisper  # lazy: torch

            whisper = load_whisper(cfg.encoder, cfg.dtype)
        model, fe, tok = whisper
        # Batches of similar length, each capped at what its longest clip can hold: a clip that
        # sends Whisper into a loop (foreign speech, noise) stops there instead of holding its
        # whole batch to max_new_tokens. Lengths come from the file headers; each batch's audio
        # is decoded when its turn comes, so a large corpus never sits in memory at once.
        seconds = [_seconds(r, src.parent) for r in todo]
        order = sorted(range(len(todo)), key=lambda i: seconds[i])
        bar = tqdm(total=len(todo), desc="transcribe", unit="clip", disable=not progress)
        partial = JsonlAppender(_partial(out))
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            waves = [_load(todo[i], src.parent) for i in idx]
            longest = max(len(w) for w in waves) / SAMPLE_RATE
            cap = min(cfg.max_new_tokens, int(TOKENS_BASE + TOKENS_PER_SECOND * longest))
            texts = transcribe(model, fe, tok, waves, batch_size=len(idx), max_new_tokens=cap, quiet=True)
            for i, t in zip(idx, texts):
                key = _key(todo[i], src.parent)
                done[key] = t.strip()
                partial.write({"id": key[0], "audio": key[1], FIELD: done[key]})
            bar.update(len(idx))
        partial.close()
        bar.close()
    out_rows = []
    for r in rows:
        r = dict(r)
        if r.get("audio"):
            r[FIELD] = done[_key(r, src.parent)]
            r["audio"] = resolve_audio(r["audio"], src.parent)  # the output may live elsewhere
        out_rows.append(r)
    write_jsonl_atomic(out, out_rows)
    _partial(out).unlink(missing_ok=True)
    return {"rows": len(rows), "transcribed": len(todo), "reused": len(rows) - len(todo)}
