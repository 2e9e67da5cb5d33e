"""Shared test data for tests/train: tiny wav clips + distilled JSONL rows, built in tmp dirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

RESPONSES = ["a cat", "hello there", "the dog barks", "yes", "a quick fox", "no", "high pitch", "slow"]


def write_rows(root: Path, n: int = 8, name: str = "train.jsonl", text_rows: int = 0,
               seed: int = 0, extra: list[dict] | None = None) -> Path:
    """`n` audio rows (0.3-1.0 s tones) [+ `text_rows` text-only rows] as a distilled JSONL."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        dur = 0.3 + 0.1 * (i % 8)
        t = np.arange(int(16000 * dur)) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(t.shape)
        sf.write(root / "wav" / f"c{i}.wav", wav.astype(np.float32), 16000)
        rows.append({"id": f"c{i}", "audio": f"wav/c{i}.wav", "duration": dur, "transcript": f"word {i}",
                     "description": f"A tone number {i}.", "instruction": "What can you hear?",
                     "response": RESPONSES[i % len(RESPONSES)], "label": f"L{i % 3}"})
    for j in range(text_rows):
        rows.append({"id": f"t{j}", "audio": None, "kind": "text", "instruction": f"Say {j}.",
                     "response": f"{j}"})
    rows += extra or []
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
