"""The `real` eval suite: public real recordings shipped with the package.

The held-out suite is cut from the run's own (often synthetic) corpus; this one is fixed: 66
clips of real speech (AN4, CMU ARCTIC, VCTK, LibriSpeech, a JFK speech) and non-speech (music,
animals, noise) from public repositories, 16 kHz mono FLAC under `resources/real/`, with only the
labels their sources state (see its README.md; `scripts/build_real_suite.py` rebuilt them).

It is asked only what the clips are labelled with: gender where known, speech / non-speech and
the kind of sound on every clip, transcript tasks where a transcript exists, open description. The clips are
never training data: a recipe whose data points at them is refused, and a suite whose clips
appear in training is refused rather than thinned.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from speech_adapter.errors import DataError
from speech_adapter.eval.suite import SuiteConfig, build_suite, load_rows
from speech_adapter.templates import TASKS

REAL_DIR = Path(__file__).resolve().parents[1] / "resources" / "real"
MANIFEST = REAL_DIR / "manifest.jsonl"
# what the real clips carry labels for: `speech` (yes/no) and `sound` (speech, music, animal,
# noise) come from meta.speech / meta.sound on every clip
REAL_TASKS = ("gender", "speech", "sound", "transcription", "content", "content_qa", "word_count", "describe")


def load_real_corpus(path=MANIFEST) -> list[dict]:
    """The real clips as corpus rows, `audio` made absolute."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: the real suite's manifest is missing (a broken install?)")
    return load_rows(path)


def real_tasks(requested=None) -> list[str]:
    """The real suite's tasks (those of `requested` it supports), in registry order."""
    wanted = set(requested) if requested else set(REAL_TASKS)
    return [t for t in TASKS if t in REAL_TASKS and t in wanted]


def build_real_suite(config: SuiteConfig, train_ids=(), train_audio=(), corpus=None) -> tuple[list[dict], dict]:
    """Eval rows over the real clips (`build_suite` restricted to `REAL_TASKS`), plus stats.

    A clip id or audio path in `train_ids` / `train_audio` raises `DataError`: the real clips
    are held out by construction, so one in training means the training data is wrong.
    """
    cfg = dataclasses.replace(config, tasks=real_tasks(config.tasks), on_training_clip="error")
    cfg.validate()
    rows, stats = build_suite(load_real_corpus() if corpus is None else corpus, cfg, train_ids, train_audio)
    stats["suite"] = "real"
    return rows, stats


def is_real_path(path) -> bool:
    """Whether `path` is the real manifest, or a file or folder inside (or holding) the real suite."""
    if not path:
        return False
    p = Path(path).expanduser().resolve()
    return p == REAL_DIR or REAL_DIR in p.parents or (p.is_dir() and REAL_DIR.is_relative_to(p))


def refuse_real_training(path, key: str) -> None:
    """`DataError` when training data (`key` names the setting) points at the real clips."""
    if is_real_path(path):
        raise DataError(f"{key}: {path} holds the real eval suite's clips ({REAL_DIR}); they are "
                        "evaluation-only and never training data. Point the recipe at another corpus.")
