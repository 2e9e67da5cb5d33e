"""On-disk cache of the frozen encoder's tapped states, so epochs after the first skip Whisper.

The encoder is frozen (DeSTA2, Ultravox), so its output for a clip never changes for a given
encoder config. One safetensors file per clip, keyed by clip id under a directory named by a
hash of the encoder config, written atomically: `cache_dir/<hash>/<id-hash>.safetensors`
holding `states` (L, T_i, D) — the clip's valid frames only, so a batch re-assembled from the
cache is exactly what `SpeechLM.encode_audio` returns for it (padding frames are zero there).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from speech_adapter.utils.io import atomic_path
from speech_adapter.utils.safety import load_safetensors


def encoder_hash(config: dict) -> str:
    """Short stable hash of what determines the encoder output (encoder id, taps, dtype...)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureCache:
    """Per-clip cache of `encode_audio` outputs: states (A, L, T, D), lengths (A,)."""

    def __init__(self, root, config: dict):
        self.dir = Path(root) / encoder_hash(config)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "encoder.json"
        if not meta.exists():
            with atomic_path(meta) as tmp:
                tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        self.hits = self.misses = 0

    def _path(self, clip_id: str) -> Path:
        return self.dir / (hashlib.sha256(clip_id.encode()).hexdigest()[:32] + ".safetensors")

    def get(self, clip_id: str) -> torch.Tensor | None:
        p = self._path(clip_id)
        if not p.exists():
            return None
        return load_safetensors(p)["states"]  # a corrupt entry is an error naming the file

    def put(self, clip_id: str, states: torch.Tensor) -> None:
        with atomic_path(self._path(clip_id), suffix=".safetensors") as tmp:
            save_file({"states": states.detach().cpu().contiguous()}, str(tmp))

    def encode(self, model, clip_ids: list[str], batch: dict):
        """`model.encode_audio(batch)` through the cache: all hits skip the encoder entirely.

        `clip_ids` name the batch's audio clips in order (rows without audio excluded).
        """
        cached = [self.get(c) for c in clip_ids]
        if clip_ids and all(c is not None for c in cached):
            self.hits += len(clip_ids)
            return stack_states(cached)
        states, lengths = model.encode_audio(batch)  # (A, L, T, D), (A,)
        self.misses += len(clip_ids)
        for i, c in enumerate(clip_ids):
            if cached[i] is None:
                self.put(c, states[i, :, : int(lengths[i])])  # (L, T_i, D)
        return states, lengths


def stack_states(per_clip: list[torch.Tensor]):
    """[(L, T_i, D)] -> zero-padded (A, L, T_max, D), lengths (A,)."""
    lengths = torch.tensor([s.shape[1] for s in per_clip], dtype=torch.long)
    l, d = per_clip[0].shape[0], per_clip[0].shape[2]
    out = per_clip[0].new_zeros(len(per_clip), l, int(lengths.max()), d)
    for i, s in enumerate(per_clip):
        out[i, :, : s.shape[1]] = s
    return out, lengths
