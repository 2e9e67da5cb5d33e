"""Pipeline stages that skip themselves when already complete.

A stage is complete when its marker `<run_dir>/.stages/<name>.json` exists and records the
same fingerprint (a hash of the config section and inputs that shaped it). Markers are written
atomically after the stage's outputs, so a stage killed midway reruns (and resumes, where the
stage itself is resumable); a changed config reruns it, and so does a deleted output (the
adapter, export or output path its summary names).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from speech_adapter.utils.io import write_json_atomic


def fingerprint(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# summary keys that name a stage's output on disk: a stage whose output was moved or deleted runs again
OUTPUT_KEYS = ("adapter", "export", "output")


class StageRunner:
    def __init__(self, run_dir, log: Callable[[str], None] = print):
        self.run_dir = Path(run_dir)
        self.marker_dir = self.run_dir / ".stages"
        self.log = log

    def _marker(self, name: str) -> Path:
        return self.marker_dir / f"{name}.json"

    def is_done(self, name: str, fp: str) -> bool:
        """The marker records `fp` and every output its summary names (OUTPUT_KEYS) still exists."""
        m = self._marker(name)
        if not m.exists():
            return False
        try:
            marker = json.loads(m.read_text())
        except (OSError, ValueError):
            return False
        if marker.get("fingerprint") != fp:
            return False
        summary = marker.get("summary") or {}
        gone = [str(summary[k]) for k in OUTPUT_KEYS if isinstance(summary.get(k), str) and not Path(summary[k]).exists()]
        if gone:
            self.log(f"[{name}] was complete, but {', '.join(gone)} is gone: running it again")
            return False
        return True

    def run(self, name: str, fp: str, fn: Callable[[], dict | None]) -> dict:
        """Run `fn` unless stage `name` is done with fingerprint `fp`; return its summary."""
        if self.is_done(name, fp):
            summary = json.loads(self._marker(name).read_text()).get("summary", {})
            self.log(f"[{name}] already complete, skipping")
            return summary
        self.log(f"[{name}] running")
        t0 = time.time()
        summary = fn() or {}
        seconds = round(time.time() - t0, 1)
        write_json_atomic(self._marker(name), {"fingerprint": fp, "seconds": seconds, "summary": summary})
        self.log(f"[{name}] done in {seconds} s")
        return summary
