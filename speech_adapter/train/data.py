"""Training rows: distilled JSONL (+ text-only replay rows) → deterministic, resumable batches.

Follows DeSTA2's data recipe (one row = audio + instruction + the backbone's own response)
with experience replay (text-only rows mixed in at a set rate). Batching is
length-bucketed and a pure function of (seed, epoch), so a run resumes at an exact
(epoch, step) by rebuilding the epoch's batch list and skipping what was done.

Which text is the target (`response`) depends on the objective:
- self_distill, kl_distill, continuation: the row's `response` (teacher output, written by distill).
- task_sft: the row's ground-truth `label` when it has one, else its `transcript`
  (transcription rows); a row with neither is rejected.

Bad audio never stops a run: every clip is checked with `load_audio` once at setup, and a clip
that turns bad later is dropped from its batch; both are logged to rejects.jsonl.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from speech_adapter.audio import load_audio
from speech_adapter.errors import AudioError, DataError
from speech_adapter.utils.io import JsonlAppender, iter_jsonl


class Rejects:
    """Append-only rejects.jsonl: `{id?, source?, line?, stage, reason}` (docs/CONTRACTS.md)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._seen: set = set()

    def add(self, reason: str, id=None, source=None, line=None) -> None:
        key = (id, source, reason)
        if self.path is None or key in self._seen:
            return
        self._seen.add(key)
        row = {"id": id, "source": str(source) if source else None, "line": line,
               "stage": "train", "reason": reason}
        with JsonlAppender(self.path) as out:
            out.write({k: v for k, v in row.items() if v is not None})


def target_text(row: dict, objective: str) -> str | None:
    """The response a row trains toward under `objective` (see the module docstring)."""
    if objective == "task_sft":
        label = row.get("label")
        return str(label) if label is not None else row.get("transcript")
    return row.get("response")


def clip_gender(row: dict) -> str | None:
    """"male" or "female": the clip's gender from `description_fields` (what the teacher was
    told), else `meta`; None when the row does not say one (no speech, mixed speakers, a text row)."""
    from speech_adapter.eval.scoring import GENDER_WORDS

    gender = (row.get("description_fields") or {}).get("gender") or (row.get("meta") or {}).get("gender")
    gender = str(gender).strip().lower() if gender else None
    return gender if gender in GENDER_WORDS else None


def clip_voice(row: dict) -> str | None:
    """The voice gender head's label for a row's clip (model.adapter.voice_gender_loss): "male" or
    "female" (`clip_gender`), "none" for a clip without speech, None where unknown (mixed
    speakers, a text row, no labels)."""
    gender = clip_gender(row)
    if gender:
        return gender
    said = (row.get("description_fields") or {}).get("speech")
    no_speech = (row.get("meta") or {}).get("speech") is False or str(said).strip().lower() == "no"
    return "none" if no_speech else None


def key_words(row: dict) -> list[str] | None:
    """Words that name the clip's gender in an answer about it (`scoring.GENDER_WORDS`), or None
    when the row does not say it (`clip_gender`)."""
    from speech_adapter.eval.scoring import GENDER_WORDS

    gender = clip_gender(row)
    return list(GENDER_WORDS[gender]) if gender else None


def read_rows(path, objective: str, rejects: Rejects, text: bool = False) -> list[dict]:
    """Rows of `path` usable for training; malformed lines and rows lacking fields go to rejects."""
    path = Path(path)
    errors: list = []
    rows = []
    for i, row in enumerate(iter_jsonl(path, strict=False, errors=errors)):
        rid = row.get("id", f"{path.name}#{i}")
        is_text = row.get("audio") is None
        response = target_text(row, objective) if not is_text else row.get("response")
        missing = [k for k, v in (("instruction", row.get("instruction")), ("response", response)) if not v]
        if missing:
            what = "label/transcript" if objective == "task_sft" and not is_text else ", ".join(missing)
            rejects.add(f"missing {what}", id=rid, source=path)
            continue
        if text and not is_text:
            rejects.add("text_file row has audio; expected audio: null", id=rid, source=path)
            continue
        audio = None
        if not is_text:
            audio = Path(row["audio"])
            if not audio.is_absolute():
                audio = path.parent / audio
        rows.append({"id": str(rid), "audio": audio, "instruction": row["instruction"],
                     "response": response, "system": row.get("system"),
                     # what the student reads after the audio (use_transcript): Whisper's words from
                     # `data transcribe`, never the ground truth (None: decoded on the fly)
                     "transcript": row.get("asr_transcript"), "description": row.get("description"),
                     "duration": row.get("duration"), "key_words": None if is_text else key_words(row),
                     "gender": None if is_text else clip_voice(row), "task": row.get("task")})
    for e in errors:
        rejects.add(e["reason"], source=path, line=e["line"])
    return rows


class TrainData:
    """Audio rows + text replay rows, batched deterministically per epoch.

    Global row index: train_file rows are 0..n-1, text_file rows n..n+m-1. A batch holds rows
    of one kind only (audio or text), so a collate never mixes prompt formats.
    """

    def __init__(self, rows: list[dict], cfg, text_rows: list[dict] | None = None,
                 rejects: Rejects | None = None, check_audio: bool = True):
        self.cfg = cfg
        self.rejects = rejects or Rejects(None)
        self.text_rows = list(text_rows or [])
        if check_audio:
            rows = self._check_audio(rows)
        if not rows:
            raise DataError("no usable training rows (see rejects.jsonl for why)")
        self.rows = rows

    def _check_audio(self, rows):
        good = []
        for row in tqdm(rows, desc="checking audio", leave=False, disable=len(rows) < 200):
            if row["audio"] is None:
                good.append(row)
                continue
            try:
                wav = load_audio(row["audio"], max_seconds=self.cfg.max_audio_seconds)
            except AudioError as e:
                self.rejects.add(e.reason, id=row["id"], source=row["audio"])
                continue
            row = dict(row, duration=len(wav) / 16000)
            good.append(row)
        return good

    def __len__(self):
        return len(self.rows)

    # LLM tokens one second of audio becomes; `set_audio_token_rate` reads it off the adapter
    audio_tokens_per_s: float = 10.0

    def set_audio_token_rate(self, model) -> None:
        """Weight audio seconds in the bucketing key by `model`'s adapter tokens per second
        (0 for the fixed-size Q-Former, whose batches then bucket by text length alone)."""
        import torch

        frames = torch.tensor([10, 20]) * model.encoder.frame_rate  # encoder frames of 10 s, 20 s
        n = model.adapter.num_tokens(frames.round().long())
        self.audio_tokens_per_s = float(n[1] - n[0]) / 10

    def length(self, i: int) -> float:
        """A sort key for bucketing: ~LLM tokens of the row (audio tokens + instruction + response)."""
        row = self.row(i)
        text = len(row.get("instruction") or "") + len(row["response"])
        return float(row.get("duration") or 0.0) * self.audio_tokens_per_s + text / 4

    def row(self, i: int) -> dict:
        n = len(self.rows)
        return self.rows[i] if i < n else self.text_rows[i - n]

    def _batches(self, indices: list[int], rng: random.Random) -> list[list[int]]:
        bs = self.cfg.batch_size
        rng.shuffle(indices)
        if self.cfg.length_bucketing:
            window = bs * self.cfg.bucket_size
            indices = [i for w in range(0, len(indices), window)
                       for i in sorted(indices[w:w + window], key=self.length)]
        return [indices[b:b + bs] for b in range(0, len(indices), bs)]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All micro-batches of `epoch`, a pure function of (seed, epoch)."""
        rng = random.Random(self.cfg.seed * 100003 + epoch)
        audio = [i for i, r in enumerate(self.rows) if r["audio"] is not None]
        text = [i for i, r in enumerate(self.rows) if r["audio"] is None]
        batches = self._batches(audio, rng) + self._batches(text, rng)
        if self.text_rows and self.cfg.text_mix > 0:
            n_text = round(len(self.rows) * self.cfg.text_mix / (1 - self.cfg.text_mix))
            pool = list(range(len(self.rows), len(self.rows) + len(self.text_rows)))
            picks = [rng.choice(pool) for _ in range(n_text)] if n_text > len(pool) else rng.sample(pool, n_text)
            batches += self._batches(picks, rng)
        rng.shuffle(batches)
        return batches

    def _draw(self, row: dict, salt: str = "") -> float:
        """A number in [0, 1) fixed by the seed, the row's id and `salt`: every epoch and a resumed
        run draw the same."""
        digest = hashlib.sha256(f"{self.cfg.seed}:{salt}{row['id']}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64

    def voice_only(self, row: dict) -> bool:
        """Whether `row` trains voice-only (train.voice_only_tasks): a draw fixed by the seed and
        the row's id, so every epoch and a resumed run mask the same rows."""
        if row.get("task") not in self.cfg.voice_only_tasks:
            return False
        return self._draw(row) < self.cfg.voice_only_fraction

    def voice(self, row: dict) -> str | None:
        """model.voice_line's word for a training row: the clip's label ("male"/"female"), not the
        head's verdict; None (no line) without one, e.g. no speech or mixed speakers, and for the
        train.voice_line_dropout share of rows (a fixed draw per row and seed)."""
        gender = row.get("gender")
        if gender not in ("male", "female"):
            return None
        if self.cfg.voice_line_dropout and self._draw(row, "voice_line:") < self.cfg.voice_line_dropout:
            return None
        return gender

    def load(self, indices: list[int]) -> tuple[list[str], list[dict], bool]:
        """(ids, SpeechLM example dicts, text_only) for one micro-batch; bad audio is dropped."""
        ids, examples = [], []
        text_only = all(self.row(i)["audio"] is None for i in indices)
        for i in indices:
            row = self.row(i)
            wav = None
            if row["audio"] is not None:
                try:
                    wav = load_audio(row["audio"], max_seconds=self.cfg.max_audio_seconds)
                except AudioError as e:
                    self.rejects.add(e.reason, id=row["id"], source=row["audio"])
                    continue
            ids.append(row["id"])
            examples.append({"audio": None if wav is None else wav.astype(np.float32),
                             "instruction": row["instruction"], "response": row["response"],
                             "system": row["system"], "transcript": row["transcript"],
                             "description": row["description"],
                             "key_words": row.get("key_words") if self.cfg.key_word_weight != 1 else None,
                             "gender": row.get("gender"),
                             "voice": self.voice(row),
                             "voice_only": wav is not None and self.voice_only(row)})
        return ids, examples, text_only


def load_train_data(cfg, rejects: Rejects) -> TrainData:
    """TrainData from `cfg.train_file` (+ `cfg.text_file` when text_mix > 0)."""
    rows = read_rows(cfg.train_file, cfg.objective, rejects)
    text_rows = read_rows(cfg.text_file, cfg.objective, rejects, text=True) if cfg.text_file else []
    return TrainData(rows, cfg, text_rows, rejects)
