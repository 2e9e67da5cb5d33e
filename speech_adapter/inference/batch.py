"""`speech-adapter infer --model OUT rows.jsonl out.jsonl`: batched replies for many clips.

Rows: `{id, audio, instruction}` (+ optional `system`); relative audio paths resolve against
the rows file's dir. Output rows `{id, audio, instruction, response}` are appended durably
(`JsonlAppender`), so a rerun after a kill skips the ids already in out.jsonl (and in the
rejects). Bad rows and unreadable audio go to `rejects.jsonl` beside out.jsonl with the reason
and the run goes on; `--strict` stops at the first one. Clips of <= 30 s are batched through
`SpeechLM.generate`; longer clips are chunked (one placeholder per <= 30 s piece, see
`inference.api`) and answered one at a time.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from speech_adapter.audio import CHUNK_SECONDS, SAMPLE_RATE, load_audio
from speech_adapter.config import from_dict, help_field
from speech_adapter.errors import AudioError, ConfigError, DataError
from speech_adapter.inference.chat import add_generation_args, gen_kwargs, load_model, system_prompt
from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, REPETITION_PENALTY
from speech_adapter.utils.io import JsonlAppender, iter_jsonl


@dataclass
class InferConfig:
    """Settings of `speech-adapter infer` (besides the generation options shared with chat)."""

    batch_size: int = help_field(8, "clips per generate call")
    strict: bool = help_field(False, "stop at the first bad row or clip instead of rejecting it")

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")


def done_ids(*paths) -> set[str]:
    """Ids already written to these JSONL files (torn or malformed lines are ignored)."""
    ids = set()
    for p in paths:
        if Path(p).exists():
            ids |= {str(r["id"]) for r in iter_jsonl(p, strict=False) if "id" in r}
    return ids


def _check_row(row: dict) -> str | None:
    for key in ("id", "audio", "instruction"):
        if row.get(key) in (None, ""):
            return f"missing key '{key}'"
    if not isinstance(row["instruction"], str) or not isinstance(row["audio"], str):
        return "'audio' and 'instruction' must be strings"
    return None


def infer(model, rows_path, out_path, config: InferConfig | None = None, gen: dict | None = None,
          system=None) -> dict:
    """Answer every row of `rows_path` not yet in `out_path`; returns counts.

    model: a loaded SpeechLM; gen: max_new_tokens, temperature, top_p, seed; system: the system
    prompt (None = none; api.USE_DEFAULT = the default). Raises DataError/AudioError when strict.
    """
    from tqdm.auto import tqdm

    from speech_adapter.inference.api import USE_DEFAULT, ask  # lazy: torch

    config = config or InferConfig()
    config.validate()
    gen = dict(gen or {})
    system = DEFAULT_SYSTEM_PROMPT if system is USE_DEFAULT else system
    rows_path, out_path = Path(rows_path), Path(out_path)
    rejects_path = out_path.with_name("rejects.jsonl")
    skip = done_ids(out_path, rejects_path)
    errors: list = []
    rows = list(iter_jsonl(rows_path, strict=config.strict, errors=errors))
    counts = {"rows": len(rows) + len(errors), "skipped": 0, "answered": 0, "rejected": 0}
    seen: set[str] = set()
    with JsonlAppender(out_path) as out, JsonlAppender(rejects_path) as rej:
        def reject(row_id, reason, line=None):
            if config.strict:
                raise DataError(f"{rows_path}{f':{line}' if line else ''}: {reason}")
            rej.write({"id": row_id, "source": str(rows_path), **({"line": line} if line else {}),
                       "stage": "infer", "reason": reason})
            counts["rejected"] += 1

        old_lines = {r.get("line") for r in iter_jsonl(rejects_path, strict=False)} if rejects_path.exists() else set()
        for e in errors:
            if e["line"] not in old_lines:
                reject(None, e["reason"], e["line"])
        batch: list[tuple[dict, dict]] = []

        def flush():
            if not batch:
                return
            exs = [ex for _, ex in batch]
            sample = gen.get("temperature", 0.0) > 0
            texts = model.generate(exs, max_new_tokens=gen.get("max_new_tokens", 256), do_sample=sample,
                                   temperature=gen.get("temperature", 1.0) or 1.0,
                                   top_p=gen.get("top_p", 1.0), seed=gen.get("seed"),
                                   repetition_penalty=gen.get("repetition_penalty", REPETITION_PENALTY))
            for (row, _), text in zip(batch, texts):
                out.write({"id": row["id"], "audio": row["audio"], "instruction": row["instruction"],
                           "response": text})
                counts["answered"] += 1
            batch.clear()

        for row in tqdm(rows, desc="infer", unit="clip"):
            if row.get("id") is not None and str(row["id"]) in skip:
                counts["skipped"] += 1
                continue
            bad = _check_row(row)
            if bad:
                reject(row.get("id"), bad)
                continue
            rid = str(row["id"])
            if rid in seen:
                reject(row["id"], "duplicate id")
                continue
            seen.add(rid)
            path = Path(row["audio"]) if Path(row["audio"]).is_absolute() else rows_path.parent / row["audio"]
            try:
                audio = load_audio(path)
            except AudioError as e:
                if config.strict:
                    raise
                reject(row["id"], str(e))
                continue
            sys_prompt = row.get("system", system)
            if len(audio) > CHUNK_SECONDS * SAMPLE_RATE:  # long clip: chunked, answered alone
                text = ask(model, audio, row["instruction"], system=sys_prompt, **gen)
                out.write({"id": row["id"], "audio": row["audio"], "instruction": row["instruction"],
                           "response": text})
                counts["answered"] += 1
                continue
            batch.append((row, {"audio": audio, "instruction": row["instruction"], "system": sys_prompt}))
            if len(batch) >= config.batch_size:
                flush()
        flush()
    return counts


def configure(parser: argparse.ArgumentParser) -> None:
    add_generation_args(parser)
    parser.add_argument("rows", help="JSONL of {id, audio, instruction}")
    parser.add_argument("out", help="output JSONL (appended; rerun to resume); rejects.jsonl goes beside it")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per generate call")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad row or clip")


def main(args) -> int:
    cfg = from_dict(InferConfig, {"batch_size": args.batch_size, "strict": args.strict})
    gen = gen_kwargs(args)
    if not Path(args.rows).exists():
        raise DataError(f"{args.rows}: file not found")
    counts = infer(load_model(args), args.rows, args.out, cfg, gen, system=system_prompt(args))
    print(f"{args.out}: {counts['answered']} answered, {counts['skipped']} already done, "
          f"{counts['rejected']} rejected (rejects.jsonl)", file=sys.stderr)
    return 0
