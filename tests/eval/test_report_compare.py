"""Report files (json keys, markdown, PNGs) and side-by-side comparison of two runs."""

import json

import pytest

from speech_adapter.errors import DataError
from speech_adapter.eval.report import compare, load_report, write_report
from speech_adapter.eval.runner import aggregate


def fake_report(system, speech_ok, text_ok=1.0):
    scored = []
    for i in range(4):
        for mode, ok in (("speech", speech_ok), ("text_ceiling", text_ok), ("text_retention", speech_ok)):
            scored.append({"id": f"r{i}", "task": "gender" if i < 2 else "transcription", "split": ["seen", "unseen"][i % 2],
                           "mode": mode, "template_id": "t", "kind": "constrained", "metric": "option", "label": "x",
                           "output": "", "score": float(i % 2 == 0), "format": {"json": i / 4 < ok}, "format_ok": None})
    rep = aggregate(scored)
    rep.update(system=system, n_rows=4)
    return rep


def test_write_report_files(tmp_path):
    paths = write_report(fake_report("distill", 0.5), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert {"modes", "delta", "system", "n_rows"} <= set(data)
    assert {"tasks", "constraints", "if_rate", "accuracy_seen", "accuracy_unseen"} <= set(data["modes"]["speech"])
    assert data["delta"]["speech"]["if_rate"] == pytest.approx(-0.5)
    for key in ("tasks_png", "if_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["md"].read_text()
    assert "| gender | option | 100.0 / 0.0 |" in md and "-0.50" in md


def test_compare_two_runs(tmp_path):
    write_report(fake_report("sft", 0.25), tmp_path / "a")
    write_report(fake_report("distill", 1.0), tmp_path / "b")
    md = compare([tmp_path / "a", tmp_path / "b" / "report.json"], tmp_path / "cmp")
    assert "| | sft | distill |" in md
    assert "| json | 25.0 / 100.0 / 25.0 | 100.0 / 100.0 / 100.0 |" in md
    assert "| speech | -0.75 | +0.00 |" in md
    assert (tmp_path / "cmp" / "compare.md").read_text() == md
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


def test_load_report_errors(tmp_path):
    with pytest.raises(DataError, match="no eval report"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(DataError, match="lacks the key 'modes'"):
        load_report(tmp_path)
