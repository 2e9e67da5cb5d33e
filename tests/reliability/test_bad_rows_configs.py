"""Bad rows and bad configs: each ends in one `error: ...` line naming the file/line/key (exit 2),
or, for batch commands, a reject naming the line while the good rows go on.

`ERROR_CASES` is the table: (name, argv builder, substrings the one-line error must hold).
A few cases also run `.venv/bin/speech-adapter` in a subprocess to check there is no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speech_adapter.cli import main
from tests.reliability.cases import SR, tone

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / ".venv" / "bin" / "speech-adapter"
TINY_MODEL = {"encoder": "tiny:whisper", "llm": "tiny:llm", "adapter": {"kind": "qformer", "num_queries": 4,
                                                                         "qformer_layers": 1, "qformer_heads": 4}}


def wav(path: Path) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(0.5), SR)
    return path


def jsonl(path: Path, lines: list) -> Path:
    """Write lines: dicts as JSON, bytes/str as given (to plant malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = b""
    for x in lines:
        out += (json.dumps(x, ensure_ascii=False).encode() if isinstance(x, dict)
                else x if isinstance(x, bytes) else x.encode()) + b"\n"
    path.write_bytes(out)
    return path


def corpus(d: Path, bad_line) -> Path:
    a = wav(d / "ünï códe dir" / "a clip.wav")
    return jsonl(d / "in.jsonl", [{"id": "a", "audio": str(a), "transcript": "hi"}, bad_line])


def recipe(d: Path, **sections) -> Path:
    data = {"name": "t", "output_dir": str(d / "out"), "model": TINY_MODEL, "train": {"max_steps": 1}}
    for k, v in sections.items():
        data[k] = v if not isinstance(v, dict) else {**data.get(k, {}), **v}
    p = d / "recipe.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True))
    return p


def _train_rows(d: Path) -> Path:
    return jsonl(d / "train.jsonl", [{"id": "x"}])


def _attr(d, bad, strict=True):
    return ["data", "attributes", "--input", str(corpus(d, bad)), "--output", str(d / "o" / "x.jsonl"),
            "--quiet"] + (["--strict"] if strict else [])


def _suite(d, rows):
    return ["eval", "run", "--suite", str(jsonl(d / "suite.jsonl", rows)), "--model", str(d / "model"),
            "--out", str(d / "run"), "--modes", "speech"]


# name -> (argv builder(tmp_path), substrings of the single error line)
ERROR_CASES = {
    # data commands (strict mode: the first bad row stops the run, naming file and line)
    "data_malformed_jsonl": (lambda d: _attr(d, "{not json"), ["in.jsonl:2", "malformed JSONL"]),
    "data_non_utf8_row": (lambda d: _attr(d, b'{"id": "b", "audio": "\xff\xfe.wav"}'), ["in.jsonl:2", "utf-8"]),
    "data_json_not_object": (lambda d: _attr(d, "[1, 2]"), ["in.jsonl:2", "expected a JSON object"]),
    "data_missing_field": (lambda d: _attr(d, {"id": "b"}), ["in.jsonl", "lacks audio"]),
    "data_wrong_type_audio": (lambda d: _attr(d, {"id": "b", "audio": 123}), ["123", "file not found"]),
    "data_missing_input": (lambda d: ["data", "attributes", "--input", str(d / "nope.jsonl"), "--output",
                                      str(d / "o.jsonl")], ["nope.jsonl", "not found"]),
    "data_unknown_config_key": (lambda d: ["data", "attributes", "--config", str(_yaml(d, {"fmni": 50})),
                                           "--input", "x", "--output", "y"], ["fmni", "did you mean 'fmin'"]),
    "data_wrong_config_type": (lambda d: ["data", "attributes", "--config", str(_yaml(d, {"fmin": "low"})),
                                          "--input", "x", "--output", "y"], ["fmin"]),
    "data_synth_bad_range": (lambda d: ["data", "synth", "--out-dir", str(d), "--pitch-min", "120"],
                             ["pitch_min"]),
    "import_non_utf8_csv": (lambda d: ["data", "import", "--source", str(_csv(d, b"audio,text\nx.wav,caf\xe9\n")),
                                       "--out-dir", str(d / "imp"), "--quiet"], ["labels.csv:2", "utf-8"]),
    "distill_missing_description": (lambda d: ["data", "distill", "--input", str(corpus(d, {"id": "b", "audio": "x.wav"})),
                                               "--output", str(d / "dist" / "o.jsonl"), "--model", f"fake:{_fake(d)}",
                                               "--quiet"], ["in.jsonl", "'a'", "description"]),
    "distill_unknown_task": (lambda d: ["data", "distill", "--input", "x", "--output", "y", "--tasks", "gendr"],
                             ["tasks", "gendr", "did you mean 'gender'"]),
    "distill_bad_fake_script": (lambda d: ["data", "distill", "--input", str(jsonl(d / "in.jsonl", [
                                           {"id": "b", "audio": "x.wav", "description": "x"}])), "--output", str(d / "o.jsonl"),
                                           "--model", f"fake:{_text(d, b'{oops')}"], ["r.yaml", "cannot read"]),
    # train
    "train_unknown_key": (lambda d: ["train", str(recipe(d)), "train.lrr=1"], ["train.lrr", "did you mean 'lr'"]),
    "train_wrong_type": (lambda d: ["train", str(recipe(d)), "train.lr=fast"], ["train.lr"]),
    "train_missing_file": (lambda d: ["train", str(recipe(d)), "--train-file", f"{d}/gone.jsonl"],
                           ["train.train_file", "gone.jsonl"]),
    "train_bad_override": (lambda d: ["train", str(recipe(d)), "train.lr"], ["train.lr", "key=value"]),
    "train_no_usable_rows": (lambda d: ["train", str(recipe(d)), "--train-file", str(_train_rows(d))],
                             ["no usable training rows", "rejects.jsonl"]),
    "train_unknown_section": (lambda d: ["train", str(recipe(d, trian={"lr": 1}))], ["trian", "did you mean 'train'"]),
    # eval
    "eval_malformed_suite": (lambda d: _suite(d, ["{oops"]), ["suite.jsonl:1"]),
    "eval_missing_model": (lambda d: _suite(d, [{"id": "a"}])[:5] + [str(d / "no model")] + _suite(d, [])[6:],
                           ["no model", "adapter_config.json"]),
    "eval_row_missing_instruction": (lambda d: _suite(d, [_eval_row(d, instruction=None)]), ["suite.jsonl", "instruction"]),
    "eval_row_missing_id": (lambda d: _suite(d, [_eval_row(d, id=None)]), ["suite.jsonl", "id"]),
    "eval_row_unknown_constraint": (lambda d: _suite(d, [_eval_row(d, constraints=[{"id": "nope", "kwargs": {}}])]),
                                    ["suite.jsonl", "nope"]),
    "eval_bad_modes": (lambda d: _suite(d, [{"id": "a"}])[:-1] + ["speach"], ["speach"]),
    # infer / chat
    "infer_missing_rows_file": (lambda d: ["infer", "--model", str(d / "model"), str(d / "nope.jsonl"),
                                           str(d / "o.jsonl")], ["nope.jsonl"]),
    "chat_missing_audio": (lambda d: ["chat", "--model", str(d / "m"), "--audio", str(d / "ghost clip.wav"), "hi"],
                           ["ghost clip.wav", "file not found"]),
    # recipes (`run --dry-run` validates everything before any work)
    "recipe_missing_file": (lambda d: ["run", str(d / "none.yaml"), "--dry-run"], ["none.yaml", "not found"]),
    "recipe_invalid_yaml": (lambda d: ["run", str(_text(d, "name: [unclosed\n  x: {")), "--dry-run"],
                            ["r.yaml", "line 2", "invalid YAML"]),
    "recipe_non_utf8": (lambda d: ["run", str(_text(d, b"name: \xff\xfe\n")), "--dry-run"], ["r.yaml", "UTF-8"]),
    "recipe_top_level_list": (lambda d: ["run", str(_text(d, "- a\n- b\n")), "--dry-run"], ["r.yaml", "mapping"]),
    "recipe_unknown_key": (lambda d: ["run", str(_demo(d)), "train.max_stesp=3", "--dry-run"],
                           ["train.max_stesp", "max_steps"]),
    "recipe_unknown_section": (lambda d: ["run", str(_demo(d)), "evall.x=1", "--dry-run"], ["evall"]),
    "recipe_wrong_type": (lambda d: ["run", str(_demo(d)), "train.epochs=many", "--dry-run"], ["train.epochs"]),
    "recipe_managed_path": (lambda d: ["run", str(_demo(d)), "train.train_file=/x.jsonl", "--dry-run"],
                            ["train.train_file", "set by the pipeline"]),
    "recipe_nested_unknown": (lambda d: ["run", str(_demo(d)), "model.adapter.knd=qformer", "--dry-run"],
                              ["model.adapter.knd", "kind"]),
    "recipe_bad_enum": (lambda d: ["run", str(_demo(d)), "model.adapter.kind=transformer", "--dry-run"],
                        ["model.adapter.kind", "transformer"]),
    "recipe_is_directory": (lambda d: ["run", str(d), "--dry-run"], ["{d}", "is a directory"]),
    "data_input_is_directory": (lambda d: ["data", "attributes", "--input", str(d), "--output", str(d / "o.jsonl")],
                                ["{d}", "is a directory"]),
    "infer_rows_is_directory": (lambda d: ["infer", "--model", str(d / "model"), str(d), str(d / "o.jsonl")],
                                ["{d}", "is a directory"]),
    "eval_model_is_a_file": (lambda d: _suite(d, [_eval_row(d)])[:5] + [str(wav(d / "m.wav"))] + _suite(d, [])[6:],
                             ["m.wav", "adapter_config.json"]),
    "recipe_missing_corpus": (lambda d: ["run", str(_demo(d)), "data.source=corpus",
                                         f"data.corpus={d}/no corpus ü.jsonl", "--dry-run"], ["no corpus ü.jsonl"]),
}


def _csv(d: Path, data: bytes) -> Path:
    (d / "x.wav").write_bytes(b"")
    p = d / "labels.csv"
    p.write_bytes(data)
    return p


def _eval_row(d: Path, **changes) -> dict:
    row = {"id": "r1", "task": "gender", "audio": str(wav(d / "e clip.wav")), "transcript": "hi",
           "meta": {"gender": "female"}, "instruction": "Male or female?", "template_id": "g.0", "split": "seen",
           "constraints": [], "options": ["female", "male"], "label": "female", "metric": "option"}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def _fake(d: Path) -> Path:
    p = d / "fake.json"
    p.write_text(json.dumps({"default": "A person speaks."}))
    return p


def _yaml(d: Path, data: dict) -> Path:
    p = d / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _text(d: Path, text) -> Path:
    p = d / "r.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _demo(d: Path) -> Path:
    p = d / "demo copy.yaml"
    p.write_text((ROOT / "recipes" / "demo.yaml").read_text())
    return p


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from speech_adapter.models.tiny import tiny_speechlm

    d = tmp_path_factory.mktemp("m")
    tiny_speechlm().save_adapter(d / "model")
    return d


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_error_is_one_line_naming_the_culprit(name, tmp_path, capsys, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    build, needles = ERROR_CASES[name]
    (tmp_path / "model").symlink_to(tiny_model_dir / "model")
    argv = build(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, f"exit {rc}; stderr: {err}"
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("error: "), err
    for n in needles:
        n = n.replace("{d}", str(tmp_path))
        assert n.lower() in last.lower(), f"{n!r} not in {last!r}"
    assert "Traceback" not in err


# --- batch commands without --strict: the bad line is a reject naming the line; the good row goes on

BATCH_BAD_LINES = {
    "malformed": ("{not json", "malformed JSONL"),
    "non_utf8": (b'{"id": "b\xff"}', "utf-8"),
    "missing_fields": ({"id": "c"}, "c"),
    "wrong_types": ({"id": "d", "audio": 5, "instruction": ["x"]}, "d"),
}


def _infer_rows(d: Path) -> Path:
    a = wav(d / "naïve dir" / "clip one.wav")
    return jsonl(d / "rows.jsonl", [{"id": "a", "audio": str(a), "instruction": "hi"}]
                 + [v[0] for v in BATCH_BAD_LINES.values()])


def test_batch_commands_reject_bad_lines_and_go_on(tmp_path, tiny_model_dir):
    from speech_adapter.inference.api import load
    from speech_adapter.inference.batch import infer
    from speech_adapter.train.config import TrainConfig
    from speech_adapter.train.data import Rejects, TrainData, read_rows

    rows = _infer_rows(tmp_path)
    counts = infer(load(tiny_model_dir / "model"), rows, tmp_path / "out" / "o.jsonl", gen={"max_new_tokens": 2})
    rej = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert counts["answered"] == 1 and counts["rejected"] == 4 == len(rej)
    assert {r.get("line") for r in rej} >= {2, 3}  # malformed lines are named by line
    assert all(r["stage"] == "infer" and r["reason"] for r in rej)

    # train: same file (instruction/response missing) -> rejects with line or id, good row kept
    train = jsonl(tmp_path / "train.jsonl",
                  [{"id": "a", "audio": str(tmp_path / "naïve dir" / "clip one.wav"), "instruction": "hi",
                    "response": "a tone"}] + [v[0] for v in BATCH_BAD_LINES.values()])
    r = Rejects(tmp_path / "t" / "rejects.jsonl")
    data = TrainData(read_rows(train, "self_distill", r), TrainConfig(), rejects=r)
    assert [x["id"] for x in data.rows] == ["a"]
    trej = [json.loads(x) for x in (tmp_path / "t" / "rejects.jsonl").read_text().splitlines()]
    assert {x.get("line") for x in trej} >= {2, 3} and len(trej) == 4

    # data attributes: the same bad lines are rejects; the good clip is written
    from data_prep.attributes import run_attributes
    from data_prep.config import AttributesConfig

    res = run_attributes(AttributesConfig(input=str(train), output=str(tmp_path / "a" / "o.jsonl")), progress=False)
    assert res["written"] == 1 and sum(res["rejected"].values()) == 4


def test_cli_subprocess_prints_one_line_without_traceback(tmp_path):
    """The installed console script: exit 2, one `error:` line, no traceback."""
    cases = [
        ["run", str(_demo(tmp_path)), "train.lrr=1", "--dry-run"],
        ["data", "attributes", "--input", str(corpus(tmp_path, "{bad")), "--output", str(tmp_path / "o.jsonl"),
         "--strict", "--quiet"],
        ["chat", "--model", str(tmp_path), "--audio", str(_text(tmp_path, "not audio")), "hi"],
    ]
    for argv in cases:
        p = subprocess.run([str(EXE), *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, p.stderr)
        assert "Traceback" not in p.stderr


def test_dry_run_accepts_the_demo_recipe_with_overrides(tmp_path, capsys):
    """The control case: the same recipe with good overrides validates."""
    assert main(["run", str(_demo(tmp_path)), "train.max_steps=3", "data.synth.num_clips=12", "--dry-run"]) == 0
    assert "max_steps: 3" in capsys.readouterr().out
