"""Every bad audio case (tests/reliability/cases.py) through every entry point that reads audio.

Each entry point runs once over all cases (batch commands) or once per case (chat), on tiny
random-weight models and fake teachers; the table then checks each (entry, case) outcome: a
one-line reason naming the file, or an accepted clip (with the repair noted where the command
records repairs). The clips live in a directory whose name has a space and non-ASCII letters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.cases import AUDIO_CASES, expected, write_all

CASES = list(AUDIO_CASES)
ENTRIES = ["import", "attributes", "describe", "distill", "train", "eval", "infer", "chat"]
RECORDS_REPAIRS = {"import", "attributes"}  # where a repair note is visible in the output


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("rel") / "bad clips ünï")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from tests.inference.export_fixtures import perturbed_tiny

    d = tmp_path_factory.mktemp("model") / "tiny model"
    perturbed_tiny().save_adapter(d)
    return d


def _by_case(clips, rows, rejects, id_of=lambda r: r["id"], notes=lambda r: "") -> dict:
    """{case: ("reject", text) | ("ok", notes)} from output rows and rejects.jsonl rows."""
    res = {}
    for r in rows:
        res[id_of(r)] = ("ok", notes(r))
    for r in rejects:
        text = f"{r.get('source', '')} {r['reason']}" if "source" in r else r["reason"]
        res[str(r.get("id")).split("/")[0]] = ("reject", text)
    return res


def run_import(clips, root: Path) -> dict:
    from data_prep.config import ImportConfig
    from data_prep.importers import run_import

    labels = root / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": c, "audio": str(p), "text": "hi"}) + "\n"
                              for c, p in clips.items()))
    run_import(ImportConfig(source=str(labels), out_dir=str(root / "out"), id_column="id",
                            text_column="text"), progress=False)
    return _by_case(clips, _rows(root / "out" / "corpus.jsonl"), _rows(root / "out" / "rejects.jsonl"),
                    notes=lambda r: "; ".join(r["meta"].get("repairs", [])))


def _corpus(clips, root: Path) -> Path:
    p = root / "corpus.jsonl"
    p.write_text("".join(json.dumps({"id": c, "audio": str(a), "transcript": "", "language": "en",
                                     "meta": {"gender": "female"}}) + "\n" for c, a in clips.items()))
    return p


def run_attributes(clips, root: Path) -> dict:
    from data_prep.attributes import run_attributes
    from data_prep.config import AttributesConfig

    run_attributes(AttributesConfig(input=str(_corpus(clips, root)), output=str(root / "a" / "attrs.jsonl")),
                   progress=False)
    return _by_case(clips, _rows(root / "a" / "attrs.jsonl"), _rows(root / "a" / "rejects.jsonl"),
                    notes=lambda r: "; ".join(r.get("audio_repairs", [])))


def run_describe(clips, root: Path) -> dict:
    from data_prep.config import DescribeConfig
    from data_prep.describe import run_describe

    cfg = DescribeConfig(input=str(_corpus(clips, root)), output=str(root / "d" / "desc.jsonl"),
                         fields=["gender", "duration"])
    run_describe(cfg, progress=False, transcriber=lambda xs: ["hello"] * len(xs))
    return _by_case(clips, _rows(root / "d" / "desc.jsonl"), _rows(root / "d" / "rejects.jsonl"))


def run_distill(clips, root: Path, monkeypatch) -> dict:
    """distill reads described rows only: it must never decode audio (bad clips pass through)."""
    import soundfile

    import speech_adapter.audio
    from data_prep.distill import DistillConfig, distill
    from data_prep.teacher import FakeTeacher

    def no_decode(*a, **k):
        raise AssertionError("distill decoded audio")

    monkeypatch.setattr(speech_adapter.audio, "load_audio", no_decode)
    monkeypatch.setattr(soundfile, "read", no_decode)
    rows = [{"id": c, "audio": str(a), "transcript": "hello there", "language": "en",
             "meta": {"gender": "female", "speakers": 1},
             "description": "[00:00-00:01] hello there (Gender: Female)"} for c, a in clips.items()]
    cfg = DistillConfig(input=str(root / "desc.jsonl"), output=str(root / "dist" / "distilled.jsonl"),
                        quiet=True, tasks=["gender"], describe_per_clip=0, templates_per_clip=1,
                        constrained_fraction=0.0, attempts=1)
    distill(rows, cfg, teacher=FakeTeacher({"default": "The speaker is female."}))
    return _by_case(clips, _rows(root / "dist" / "distilled.jsonl"), _rows(root / "dist" / "rejects.jsonl"),
                    id_of=lambda r: r["clip_id"])


def run_train(clips, root: Path) -> dict:
    from speech_adapter.train.config import TrainConfig
    from speech_adapter.train.data import Rejects, TrainData

    rows = [{"id": c, "audio": a, "instruction": "What can you hear?", "response": "a tone",
             "system": None, "transcript": None, "description": None} for c, a in clips.items()]
    data = TrainData(rows, TrainConfig(batch_size=2), rejects=Rejects(root / "rejects.jsonl"))
    ids, examples, _ = data.load(list(range(len(data))))  # every accepted clip decodes in a batch
    assert ids == [r["id"] for r in data.rows] and all(e["audio"].ndim == 1 for e in examples)
    return _by_case(clips, [{"id": r["id"]} for r in data.rows], _rows(root / "rejects.jsonl"))


def run_eval(clips, root: Path, tiny_dir: Path) -> dict:
    from speech_adapter.cli import main

    suite = root / "suite.jsonl"
    suite.write_text("".join(json.dumps({
        "id": c, "task": "gender", "audio": str(a), "transcript": "hi", "meta": {"gender": "female"},
        "instruction": "Is the speaker male or female?", "template_id": "gender.seen.0", "split": "seen",
        "constraints": [], "options": ["female", "male"], "label": "female", "metric": "option",
        "description": "Gender: Female"}) + "\n" for c, a in clips.items()))
    assert main(["eval", "run", "--suite", str(suite), "--model", str(tiny_dir), "--out", str(root / "run"),
                 "--modes", "speech", "--max-new-tokens", "2", "--batch-size", "8"]) == 0
    done = [r for r in _rows(root / "run" / "scores.jsonl")]
    return _by_case(clips, done, _rows(root / "run" / "rejects.jsonl"))


def run_infer(clips, root: Path, tiny_dir: Path) -> dict:
    from speech_adapter.inference.api import load
    from speech_adapter.inference.batch import infer

    rows = root / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": c, "audio": str(a), "instruction": "What is it?"}) + "\n"
                            for c, a in clips.items()))
    infer(load(tiny_dir), rows, root / "out.jsonl", gen={"max_new_tokens": 2})
    return _by_case(clips, _rows(root / "out.jsonl"), _rows(root / "rejects.jsonl"))


def run_chat(clips, root: Path, tiny_dir: Path) -> dict:
    from speech_adapter.errors import SpeechAdapterError
    from speech_adapter.inference.api import Conversation, load

    model = load(tiny_dir)
    res = {}
    for case, path in clips.items():
        conv = Conversation(model)
        try:
            n = conv.add_audio(path)
        except SpeechAdapterError as e:
            res[case] = ("reject", str(e))
            continue
        assert isinstance(conv.ask("What is it?", max_new_tokens=2), str)
        res[case] = ("ok", f"chunked into {n} pieces" if n > 1 else "")
    return res


@pytest.fixture(scope="module")
def outcomes(clips, tiny_dir, tmp_path_factory) -> dict:
    """{entry: {case: outcome}}, each entry run once (lazily) over every case."""
    cache: dict = {}

    def get(entry: str) -> dict:
        if entry not in cache:
            root = tmp_path_factory.mktemp(entry)
            if entry == "distill":
                mp = pytest.MonkeyPatch()
                try:
                    cache[entry] = run_distill(clips, root, mp)
                finally:
                    mp.undo()
            elif entry in ("eval", "infer", "chat"):
                cache[entry] = globals()[f"run_{entry}"](clips, root, tiny_dir)
            else:
                cache[entry] = globals()[f"run_{entry}"](clips, root)
        return cache[entry]

    return get


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("entry", ENTRIES)
def test_bad_audio(entry, case, outcomes, clips):
    got = outcomes(entry).get(case)
    assert got is not None, f"{entry}: {case} neither written nor rejected (silently dropped)"
    if entry == "distill":  # audio is not decoded here: every row passes through to train, which checks it
        assert got[0] == "ok", got
        return
    want = expected(entry, case)
    if want[0] == "reject":
        assert got[0] == "reject", f"{entry} accepted {case}: {got}"
        text = got[1]
        assert want[1] in text and "\n" not in text, text
        assert clips[case].name in text, f"reason does not name the file: {text}"
    else:
        assert got[0] == "ok", f"{entry} rejected {case}: {got}"
        if entry in RECORDS_REPAIRS or want[1] == "chunked" and entry == "chat":
            assert want[1] in got[1], got
