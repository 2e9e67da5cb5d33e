"""Does a trained model hear real voices? Gender, speech presence and transcripts on every
clip of the `real` suite, one Markdown table with a row per model.

    python scripts/voice_probe.py untrained=runs/demo/eval/untrained_adapter \\
        espeak=runs/demo/train/adapter kokoro=runs/transfer_kokoro/train/adapter \\
        --work runs/voice_probe --out docs/TRANSFER.md

The pipeline's `real` suite asks a few rows per task (a scorecard, not a census); this probe
asks the plain gender question of all 50 gendered clips and the speech question of all 66, once
each (seen and unseen phrasings alternating), half of them without the option list ("Is the speaker male or
female?": Qwen-0.5B answers "female" to most listed-option gender questions even when the
description says "a man"), so per-gender accuracy rests on 24–26 answers instead of 3. It
calls the public commands (`eval build --corpus real`, `eval run --modes speech`) and reads
their scores.jsonl; generations are cached per model, so a rerun only adds what is new.
`--heldout-clips` asks the gender question of every gendered clip of a synthetic held-out split
as well, per voice group (Kokoro voices trained on, Kokoro voices held out, espeak-ng).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from data_prep.synth import voice_group
from speech_adapter.utils.io import read_jsonl, write_jsonl_atomic, write_text_atomic


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "speech_adapter.cli", *args], check=True)


def _pct(hits: list[float]) -> str:
    return "–" if not hits else f"{100 * sum(hits) / len(hits):.1f} ({len(hits)})"


def summarize(rows: list[dict]) -> dict:
    """Accuracy lists per probe cell from one model's scores.jsonl rows."""
    cells: dict[str, list] = {"gender": [], "female": [], "male": [], "speech": [], "speech clips": [],
                              "non-speech clips": [], "wer": [], "answers": {}}
    for r in rows:
        task, score, label = r.get("task"), r.get("score"), str(r.get("label") or "").lower()
        if score is None:
            continue
        if task == "gender":
            cells["gender"].append(score)
            cells.setdefault(label, []).append(score)
            key = (r.get("output") or "").strip().lower()[:40]
            cells["answers"][key] = cells["answers"].get(key, 0) + 1
        elif task == "speech":
            cells["speech"].append(score)
            cells["speech clips" if label == "yes" else "non-speech clips"].append(score)
        elif task == "transcription":
            cells["wer"].append(1.0 - score)  # the suite scores transcription as 1 - WER (floored at 0)
    return cells


def _top_reply(cells: dict) -> str:
    """The most common gender reply and its count, or – when there is none."""
    if not cells["answers"]:
        return "–"
    reply, n = max(cells["answers"].items(), key=lambda kv: kv[1])
    return f'"{reply}" ×{n}'


def table(results: dict[str, dict]) -> str:
    head = ("| model | gender | · female | · male | speech vs non-speech | · speech clips | "
            "· non-speech clips | transcription WER | most common gender reply |")
    lines = [head, "|" + "---|" * 9]
    for name, c in results.items():
        wer = "–" if not c["wer"] else f"{100 * sum(c['wer']) / len(c['wer']):.1f} %"
        lines.append(f"| {name} | {_pct(c['gender'])} | {_pct(c['female'])} | {_pct(c['male'])} | "
                     f"{_pct(c['speech'])} | {_pct(c['speech clips'])} | {_pct(c['non-speech clips'])} | "
                     f"{wer} | {_top_reply(c)} |")
    return "\n".join(lines)


def voices_table(results: dict[str, dict]) -> str:
    lines = ["| model | gender | · female | · male | most common reply |", "|---|---|---|---|---|"]
    for name, c in results.items():
        lines.append(f"| {name} | {_pct(c['gender'])} | {_pct(c['female'])} | {_pct(c['male'])} | "
                     f"{_top_reply(c)} |")
    return "\n".join(lines)


def _right_over_asked(scores: list[float]) -> str:
    """"right/asked" of 0/1 scores, or – when none was asked."""
    return f"{int(sum(scores))}/{len(scores)}" if scores else "–"


def phrasing_table(gender_rows: dict[str, list[dict]]) -> str:
    """Gender answers right / asked per phrasing (template; ':bare' = asked without the option
    list), women and men apart, over every suite: a phrasing answered "male" whatever the voice
    shows up here as 0/5 women, 5/5 men."""
    def cell(rows, label):
        return _right_over_asked([r["score"] for r in rows if str(r.get("label")).lower() == label])

    names = list(gender_rows)
    templates = sorted({r["template_id"] for rows in gender_rows.values() for r in rows})
    lines = ["| phrasing | " + " | ".join(f"{n}: women · men" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for t in templates:
        cells = []
        for n in names:
            rows = [r for r in gender_rows[n] if r["template_id"] == t]
            cells.append(f"{cell(rows, 'female')} · {cell(rows, 'male')}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_voice_table(scored: dict[str, list[dict]], voice_of: dict[str, str]) -> str:
    """Gender right / asked per held-out voice (columns) and model (rows): one voice a model
    keeps getting wrong shows up here, where the group averages hide it."""
    voices = sorted(set(voice_of.values()))
    lines = ["| model | " + " | ".join(f"`{v}`" for v in voices) + " |", "|---|" + "---|" * len(voices)]
    for name, rows in scored.items():
        cells = [_right_over_asked([r["score"] for r in rows if voice_of.get(r["clip_id"]) == v]) for v in voices]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def one_row_per_clip(path: Path) -> None:
    """Keep one row per (clip, task), seen and unseen phrasings alternating by clip: every clip
    asked once, half the cost of asking both splits."""
    rows = read_jsonl(path)
    clips = sorted({r["clip_id"] for r in rows})
    want = {c: ("seen", "unseen")[i % 2] for i, c in enumerate(clips)}
    kept, seen = [], set()
    for r in sorted(rows, key=lambda r: r["split"] != want[r["clip_id"]]):
        if (r["clip_id"], r["task"]) not in seen:
            seen.add((r["clip_id"], r["task"]))
            kept.append(r)
    write_jsonl_atomic(path, kept)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="NAME=DIR: an adapter, export or training run dir")
    ap.add_argument("--work", default="runs/voice_probe", help="suite and per-model generations")
    ap.add_argument("--out", default=None, help="Markdown file to write (default: stdout)")
    ap.add_argument("--tasks", default="gender,speech")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None, help="only the suite's first N rows (a smoke test)")
    ap.add_argument("--heldout-voices", default=None,
                    help="a described clips JSONL (e.g. runs/standard/data/heldout_clips.jsonl): its clips of "
                         "held-out Kokoro voices (meta.voice_split = heldout) get the gender question too")
    ap.add_argument("--heldout-clips", default=None,
                    help="a described clips JSONL of a held-out split (e.g. runs/standard/data/heldout_clips.jsonl): "
                         "every gendered clip gets the gender question, scored in all and per voice group "
                         "(Kokoro voices trained on, Kokoro voices held out, espeak-ng)")
    args = ap.parse_args(argv)
    pairs = []
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            ap.error(f"{spec!r}: give NAME=DIR")
        if not Path(path).exists():
            ap.error(f"{path}: no such model dir")
        pairs.append((name, path))

    work = Path(args.work)
    suite = work / "suite.jsonl"
    if not suite.exists():  # every clip once per phrasing split: n-per-task above the corpus size
        _cli("eval", "build", "--corpus", "real", "--tasks", args.tasks, "--n-per-task", "1000",
             "--constrained-fraction", "0", "--bare-fraction", "0.5", "--out", str(suite))
        one_row_per_clip(suite)
    suites = {"real": suite}
    def gender_suite(key: str, source: str, wanted, what: str) -> Path:
        """work/KEY/suite.jsonl: the gender question once per clip of `source` that `wanted(meta)` keeps."""
        clips = work / key / "clips.jsonl"
        if not clips.exists():
            clips.parent.mkdir(parents=True, exist_ok=True)
            keep = [line for line in Path(source).read_text().splitlines()
                    if line.strip() and wanted(json.loads(line).get("meta") or {})]
            if not keep:
                ap.error(f"{source}: no clip has {what}")
            clips.write_text("\n".join(keep) + "\n")
        out = work / key / "suite.jsonl"
        if not out.exists():
            _cli("eval", "build", "--corpus", str(clips), "--tasks", "gender", "--n-per-task", "1000",
                 "--constrained-fraction", "0", "--bare-fraction", "0.5", "--out", str(out))
            one_row_per_clip(out)
        return out

    if args.heldout_voices:
        suites["heldout_voices"] = gender_suite("heldout_voices", args.heldout_voices,
                                                lambda m: m.get("voice_split") == "heldout", "meta.voice_split = heldout")
    groups: dict[str, str] = {}  # clip id -> voice group, for --heldout-clips
    held_voice: dict[str, str] = {}  # clip id -> its held-out Kokoro voice, for --heldout-clips
    if args.heldout_clips:
        suites["heldout_clips"] = gender_suite("heldout_clips", args.heldout_clips, lambda m: m.get("gender"),
                                               "meta.gender")
        clips = read_jsonl(work / "heldout_clips" / "clips.jsonl")
        groups = {c["id"]: voice_group(c.get("meta") or {}) for c in clips}
        held_voice = {c["id"]: str(c["meta"].get("voice")) for c in clips
                      if (c.get("meta") or {}).get("voice_split") == "heldout"}
    heldout_scored: dict[str, list[dict]] = {}  # model -> its scored gender rows of the held-out split
    results = {key: {} for key in suites}
    by_group: dict[str, dict[str, dict]] = {}
    gender_rows: dict[str, list[dict]] = {}  # model -> its scored gender rows of every suite
    for name, path in pairs:
        for key, suite_path in suites.items():
            out = work / name if key == "real" else work / key / name
            _cli("eval", "run", "--suite", str(suite_path), "--model", path, "--modes", "speech", "--system", name,
                 "--out", str(out), "--batch-size", str(args.batch_size), "--max-new-tokens", "64",
                 *(["--limit", str(args.limit)] if args.limit else []))
            scored = [r for r in read_jsonl(out / "scores.jsonl") if r.get("mode") == "speech"]
            results[key][name] = summarize(scored)
            gendered = [r for r in scored if r.get("task") == "gender" and r.get("score") is not None]
            gender_rows.setdefault(name, []).extend(gendered)
            if key == "heldout_clips":
                clip_of = {r["id"]: r["clip_id"] for r in read_jsonl(suite_path)}
                heldout_scored[name] = [{**r, "clip_id": clip_of.get(r["id"])} for r in gendered]
                for group in sorted(set(groups.values())):
                    by_group[f"{name} · {group}"] = summarize(
                        [r for r in scored if groups.get(clip_of.get(r["id"])) == group])
    text = ("Accuracy in % (rows) on the `real` suite's clips, plain phrasings seen and unseen in "
            "training, half asked without the option list, greedy "
            f"(`python scripts/voice_probe.py {' '.join(sys.argv[1:] if argv is None else argv)}`).\n\n"
            + table(results["real"]))
    if "heldout_voices" in results:
        text += ("\n\nGender on clips of Kokoro voices no model trained on (`--heldout-voices`):\n\n"
                 + voices_table(results["heldout_voices"]))
    if "heldout_clips" in results:
        text += ("\n\nGender on every gendered clip of the held-out split (`--heldout-clips`), then per "
                 "voice group:\n\n" + voices_table({**results["heldout_clips"], **by_group}))
        if held_voice:
            text += ("\n\nGender right / asked per held-out Kokoro voice (no model trained on these "
                     "voices):\n\n" + per_voice_table(heldout_scored, held_voice))
    text += ("\n\nGender right / asked per phrasing, women · men, all suites above together:\n\n"
             + phrasing_table(gender_rows))
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
