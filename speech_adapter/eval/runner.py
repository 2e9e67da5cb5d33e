"""Run any system over eval rows, cache its generations, score them, aggregate a report.

A system is a callable `generate(batch_of_eval_rows, mode) -> list[str | dict]` (a dict holds
"output", optionally "stop" = "eos" | "length" and other fields kept with the generation), so the
runner does not depend on model internals (`systems.speechlm_generate_fn` adapts a SpeechLM).
Four modes measure forgetting the way DeSTA2 and Speech-IFEval do:

- "speech": the speech model hears the audio and reads the instruction;
- "text_ceiling": the text backbone reads the seed description + instruction (the ceiling);
- "text_retention": the speech model reads description + instruction without audio (what it
  still does as a text model);
- "cascade": the text backbone reads Whisper's transcript of the clip + instruction (ASR → LLM).

Δ = (IF_speech − IF_text) / IF_text, with IF the constraint pass rate and text the ceiling.
Generations are appended to a JSONL keyed by (system, mode, row id), so a killed eval resumes.
The adapter-free modes (`BACKBONE_MODES`) can share one cache across systems (`evaluate`'s
`shared_cache`), so they are generated once per suite. `evaluate`'s `cache_key` (the model's
weights digest and the decoding settings) is kept beside the cache: a rerun into the same
directory with another model or decoding starts afresh instead of reading the old replies.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Literal, get_args

from speech_adapter.audio import load_audio
from speech_adapter.errors import AudioError, DataError
from speech_adapter.eval.constraints import CHECKERS, check_all
from speech_adapter.eval.scoring import score_answer, wer
from speech_adapter.templates import TASKS
from speech_adapter.utils.io import JsonlAppender, iter_jsonl, write_json_atomic, write_jsonl_atomic

Mode = Literal["speech", "text_ceiling", "text_retention", "cascade"]
MODES = get_args(Mode)
BACKBONE_MODES = ("text_ceiling", "cascade")  # the frozen LLM alone: the same for every adapter
GenerateFn = Callable[[list[dict], str], list]


def rows_for_mode(rows: list[dict], mode: str) -> list[dict]:
    """The rows a mode can run: speech and cascade need audio, text modes a description."""
    if mode not in MODES:
        raise DataError(f"mode {mode!r} is not one of {list(MODES)}")
    key = "audio" if mode in ("speech", "cascade") else "description"
    return [r for r in rows if r.get(key)]


def _cache_key(system: str, mode: str, row_id) -> tuple:
    return (str(system), str(mode), str(row_id))


def load_cache(path) -> dict[tuple, dict]:
    """{(system, mode, id): generation record} from a generations JSONL (torn or bad lines skipped)."""
    path = Path(path)
    if not path.exists():
        return {}
    return {_cache_key(r.get("system"), r.get("mode"), r.get("id")): r
            for r in iter_jsonl(path, strict=False) if "id" in r}


def _record(reply) -> dict:
    """A generate function's reply as a record: {"output", "stop" (None when unknown), …}."""
    rec = dict(reply) if isinstance(reply, dict) else {"output": reply}
    rec["output"] = str(rec.get("output") or "")
    rec.setdefault("stop", None)
    return rec


def generate_records(rows: list[dict], generate: GenerateFn, *, system: str, mode: str, cache_path,
                     batch_size: int = 8, progress: bool = True) -> dict[str, dict]:
    """{row id: {"output", "stop", …}} for `rows`, generating only what the cache lacks, in batches."""
    from tqdm.auto import tqdm

    cache = load_cache(cache_path)
    todo = [r for r in rows if _cache_key(system, mode, r["id"]) not in cache]
    if todo:
        with JsonlAppender(cache_path) as out, tqdm(total=len(todo), desc=f"{system}/{mode}",
                                                    disable=not progress, unit="row") as bar:
            for i in range(0, len(todo), batch_size):
                batch = todo[i:i + batch_size]
                replies = generate(batch, mode)
                if len(replies) != len(batch):
                    raise DataError(f"{system}/{mode}: generate returned {len(replies)} outputs for "
                                    f"{len(batch)} rows")
                for row, reply in zip(batch, replies):
                    rec = {"system": system, "mode": mode, "id": row["id"], **_record(reply)}
                    out.write(rec)
                    cache[_cache_key(system, mode, row["id"])] = rec
                bar.update(len(batch))
    return {r["id"]: cache[_cache_key(system, mode, r["id"])] for r in rows}


def generate_cached(rows: list[dict], generate: GenerateFn, *, system: str, mode: str, cache_path,
                    batch_size: int = 8, progress: bool = True) -> dict[str, str]:
    """{row id: output} for `rows` (see `generate_records`)."""
    recs = generate_records(rows, generate, system=system, mode=mode, cache_path=cache_path,
                            batch_size=batch_size, progress=progress)
    return {i: r.get("output", "") for i, r in recs.items()}


def check_rows(rows: list[dict], path) -> None:
    """Raise DataError naming the suite file, row and key for a row the runner cannot use."""
    for i, r in enumerate(rows, 1):
        where = f"{path}: row {i}" + (f" (id {r['id']})" if r.get("id") not in (None, "") else "")
        for key in ("id", "task", "instruction"):
            if r.get(key) in (None, ""):
                raise DataError(f"{where}: missing '{key}'")
        if not isinstance(r["instruction"], str):
            raise DataError(f"{where}: 'instruction' must be a string, got {type(r['instruction']).__name__}")
        for c in r.get("constraints") or []:
            cid = c.get("id") if isinstance(c, dict) else c
            if cid not in CHECKERS:
                raise DataError(f"{where}: unknown constraint id {cid!r}; known: {', '.join(CHECKERS)}")


def reject_bad_audio(rows: list[dict], out_dir, max_seconds: float | None = None) -> tuple[list[dict], int]:
    """Rows whose audio `load_audio` refuses lose their audio, so the speech mode skips them
    (text modes still run them), and go to out_dir/rejects.jsonl `{id, source, stage, reason}`.

    Returns (rows, number rejected). A rerun does not log the same row twice.
    """
    path = Path(out_dir) / "rejects.jsonl"
    logged = {str(r.get("id")) for r in iter_jsonl(path, strict=False)} if path.exists() else set()
    out, bad, log = [], 0, None
    try:
        for r in rows:
            if r.get("audio"):
                try:
                    load_audio(r["audio"], max_seconds=max_seconds)
                except AudioError as e:
                    bad += 1
                    if str(r["id"]) not in logged:
                        log = log or JsonlAppender(path)
                        log.write({"id": r["id"], "source": str(r["audio"]), "stage": "eval", "reason": str(e)})
                    r = dict(r, audio=None)
            out.append(r)
    finally:
        if log is not None:
            log.close()
    return out, bad


def score_row(row: dict, output: str, mode: str, gen: dict | None = None) -> dict:
    """Content score (None for open tasks) and per-constraint pass/fail of one output.

    `gen`: the generation record; its "stop" is kept, and a cascade's transcript ("asr") with
    its WER against the row's transcript."""
    gen = gen or {}
    fmt = check_all(row.get("constraints") or [], output)
    # the row's own subject (a content question's word) and the task's attribute words
    focus = tuple(row.get("focus") or ()) + (TASKS[row["task"]].focus if row.get("task") in TASKS else ())
    out = {"id": row["id"], "task": row["task"], "split": row.get("split"), "mode": mode,
           "template_id": row.get("template_id"), "kind": row.get("kind", "plain"),
           "metric": row.get("metric"), "label": row.get("label"), "instruction": row.get("instruction"),
           "constraints": row.get("constraints") or [], "output": output, "stop": gen.get("stop"),
           "score": score_answer(output, row.get("label"), row.get("metric", "exact"), row.get("options"), focus),
           "format": fmt, "format_ok": all(fmt.values()) if fmt else None}
    if gen.get("asr") is not None:
        out["asr"] = gen["asr"]
        out["asr_wer"] = wer(gen["asr"], row["transcript"]) if row.get("transcript") else None
    return out


def _mean(xs) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def aggregate(scored: list[dict]) -> dict:
    """Per mode: accuracy per task (seen / unseen / all), IF rate per constraint, overall numbers."""
    modes: dict[str, dict] = {}
    for mode in sorted({s["mode"] for s in scored}, key=lambda m: MODES.index(m) if m in MODES else 99):
        rows = [s for s in scored if s["mode"] == mode]
        tasks = {}
        for task in sorted({s["task"] for s in rows}):
            tr = [s for s in rows if s["task"] == task]
            tasks[task] = {
                "metric": tr[0]["metric"],
                "seen": _mean(s["score"] for s in tr if s["split"] == "seen"),
                "unseen": _mean(s["score"] for s in tr if s["split"] == "unseen"),
                "all": _mean(s["score"] for s in tr),
                "n_seen": sum(s["split"] == "seen" for s in tr),
                "n_unseen": sum(s["split"] == "unseen" for s in tr),
                # format-constrained rows: the content must survive the format request too
                "constrained": _mean(s["score"] for s in tr if s["kind"] == "constrained"),
            }
        cons: dict[str, list[bool]] = {}
        for s in rows:
            for key, ok in s["format"].items():
                cons.setdefault(key.split("#")[0], []).append(ok)
        constraints = {c: {"rate": _mean(v), "n": len(v)} for c, v in sorted(cons.items())}
        modes[mode] = {
            "n": len(rows),
            "tasks": tasks,
            "constraints": constraints,
            "if_rate": _mean(ok for v in cons.values() for ok in v),
            "row_if_rate": _mean(s["format_ok"] for s in rows if s["format_ok"] is not None),
            "accuracy_seen": _mean(s["score"] for s in rows if s["split"] == "seen"),
            "accuracy_unseen": _mean(s["score"] for s in rows if s["split"] == "unseen"),
        }
    return {"modes": modes, "delta": deltas(modes)}


def _delta(x, ref):
    return None if x is None or not ref else (x - ref) / ref


def deltas(modes: dict) -> dict:
    """Δ = (IF_mode − IF_text_ceiling) / IF_text_ceiling, overall and per constraint."""
    ref = modes.get("text_ceiling")
    if not ref:
        return {}
    out = {}
    for mode in ("speech", "text_retention", "cascade"):
        if mode not in modes:
            continue
        m = modes[mode]
        out[mode] = {
            "if_rate": _delta(m["if_rate"], ref["if_rate"]),
            "constraints": {c: _delta(v["rate"], ref["constraints"].get(c, {}).get("rate"))
                            for c, v in m["constraints"].items()},
        }
    return out


def model_digest(model_dir) -> str:
    """A hash of a model directory's weights and configs (*.safetensors, *.json): which model made a reply."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def decoding_key(max_new_tokens: int, repetition_penalty: float) -> str:
    """The decoding settings a reply depends on, as one string (part of every cache key)."""
    return f"max_new_tokens={max_new_tokens},repetition_penalty={repetition_penalty}"


def drop_stale_cache(path: Path, key: dict) -> None:
    """Delete a generations cache made by another model or decoding (its key, beside it as
    <name>.key.json, differs or is missing), then write `key` there; a killed eval of the same
    model and decoding resumes from the cache."""
    path = Path(path)
    stamp = path.with_name(path.stem + ".key.json")
    if path.exists() and (not stamp.exists() or json.loads(stamp.read_text(encoding="utf-8")) != key):
        path.unlink()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, key)


def evaluate(rows: list[dict], generators: dict[str, GenerateFn], *, system: str, out_dir,
             batch_size: int = 8, progress: bool = True, shared_cache=None,
             shared_system: str = "backbone", cache_key: dict | None = None) -> dict:
    """Generate (cached in out_dir/generations.jsonl), score and aggregate every mode given.

    `shared_cache`: a generations JSONL for the `BACKBONE_MODES`, keyed by `shared_system`
    instead of `system`, so every system evaluated on the suite reuses one backbone run.
    `cache_key` (e.g. {"adapter": model_digest(dir), "decoding": decoding_key(...)}): the
    out_dir cache is dropped when it was made under another key (`drop_stale_cache`).
    Writes out_dir/scores.jsonl; returns the report dict (see `aggregate`) with run info.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cache_key is not None:
        drop_stale_cache(out_dir / "generations.jsonl", cache_key)
    scored, skipped = [], {}
    for mode, gen in generators.items():
        todo = rows_for_mode(rows, mode)
        skipped[mode] = len(rows) - len(todo)
        shared = shared_cache is not None and mode in BACKBONE_MODES
        if shared:
            Path(shared_cache).parent.mkdir(parents=True, exist_ok=True)
        recs = generate_records(todo, gen, system=shared_system if shared else system, mode=mode,
                                batch_size=batch_size, progress=progress,
                                cache_path=shared_cache if shared else out_dir / "generations.jsonl")
        scored += [score_row(r, recs[r["id"]].get("output", ""), mode, recs[r["id"]]) for r in todo]
    write_jsonl_atomic(out_dir / "scores.jsonl", scored)
    report = aggregate(scored)
    report.update(system=system, n_rows=len(rows), skipped_rows=skipped)
    return report
