"""`speech-adapter eval build` and `eval compare` end to end on small files."""

import json

from speech_adapter.cli import main
from speech_adapter.eval.report import write_report
from tests.eval.test_report_compare import fake_report
from tests.eval.test_suite_build import corpus


def test_eval_build_and_compare_cli(tmp_path, capsys):
    c = tmp_path / "heldout.jsonl"
    c.write_text("".join(json.dumps(r) + "\n" for r in corpus()))
    d = tmp_path / "distilled.jsonl"
    d.write_text(json.dumps({"id": "c00", "template_id": "gender.01", "instruction": "x"}) + "\n")
    out = tmp_path / "suite.jsonl"
    assert main(["eval", "build", "--corpus", str(c), "--exclude", str(d), "--out", str(out),
                 "--n-per-task", "2", "--tasks", "gender,transcription"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and "c00" not in {r["clip_id"] for r in rows}
    assert json.loads(out.with_suffix(".stats.json").read_text())["dropped_training_clips"] == 1
    unseen = next(r for r in rows if r["split"] == "unseen")
    d.write_text(json.dumps({"id": "t9", "template_id": unseen["template_id"], "instruction": "x"}) + "\n")
    assert main(["eval", "build", "--corpus", str(c), "--exclude", str(d), "--out", str(out),
                 "--n-per-task", "2", "--tasks", "gender,transcription"]) == 2
    assert "unseen templates occur in training" in capsys.readouterr().err
    assert main(["eval", "build", "--corpus", str(c), "--out", str(out), "--tasks", "gendr"]) == 2
    assert "unknown task 'gendr'" in capsys.readouterr().err
    write_report(fake_report("a", 0.5), tmp_path / "ra")
    write_report(fake_report("b", 1.0), tmp_path / "rb")
    assert main(["eval", "compare", str(tmp_path / "ra"), str(tmp_path / "rb")]) == 0
    assert "| | a | b |" in capsys.readouterr().out


def test_eval_finds_the_adapter_of_a_run_dir_like_export(tmp_path):
    """`eval run --model` takes what `export` takes: adapter_dir.find_source (auto)."""
    import pytest

    from speech_adapter.errors import ModelNotFoundError
    from speech_adapter.models.adapter_dir import ADAPTER_CONFIG, WEIGHTS, find_source

    with pytest.raises(ModelNotFoundError, match="no adapter_config.json"):
        find_source(tmp_path)
    for sub in ("checkpoints/step-00002", "checkpoints/step-00010"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / ADAPTER_CONFIG).write_text("{}")
    assert find_source(tmp_path) == tmp_path / "checkpoints/step-00010"
    (tmp_path / "train" / "adapter").mkdir(parents=True)
    for name in (ADAPTER_CONFIG, WEIGHTS):
        (tmp_path / "train" / "adapter" / name).write_text("{}")
    assert find_source(tmp_path) == tmp_path / "train" / "adapter"
    assert find_source(tmp_path / "train" / "adapter") == tmp_path / "train" / "adapter"
