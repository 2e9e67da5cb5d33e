"""Report files (json keys, markdown, PNGs), side-by-side comparison of runs, paired differences."""

import json

import pytest

from speech_adapter.errors import DataError
from speech_adapter.eval.report import (compare, load_report, paired_difference, sign_test_p,
                                        write_report)
from speech_adapter.eval.runner import aggregate
from speech_adapter.utils.io import write_jsonl_atomic

# 40 rows: the other run is right on rows 0-29, the base on rows 30-39 (all discordant)
BASE_RIGHT = [float(i >= 30) for i in range(40)]
OTHER_RIGHT = [float(i < 30) for i in range(40)]
P_30_OF_40 = 0.0022214337732293643  # 2 · P(Binomial(40, 0.5) <= 10)


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


def score_rows(scores, mode="speech", prefix="syn"):
    """scores.jsonl rows: ids prefix-i; tasks gender (first half) / pitch; splits alternate."""
    return [{"id": f"{prefix}-{i:03d}", "task": "gender" if i < len(scores) // 2 else "pitch",
             "split": ["seen", "unseen"][i % 2], "mode": mode, "template_id": "t", "metric": "option",
             "label": "x", "output": "", "score": sc, "format": {}, "format_ok": None}
            for i, sc in enumerate(scores)]


def write_run(root, system, scores=None):
    write_report(fake_report(system, 1.0), root)
    if scores is not None:
        write_jsonl_atomic(root / "scores.jsonl", score_rows(scores))
    return root


@pytest.mark.parametrize("wins,losses,p", [(0, 0, 1.0), (5, 5, 1.0), (0, 5, 2 / 32), (30, 10, P_30_OF_40)])
def test_sign_test_p(wins, losses, p):
    assert sign_test_p(wins, losses) == pytest.approx(p)
    assert sign_test_p(losses, wins) == pytest.approx(p)


def test_paired_difference_clear_win_is_better_and_deterministic():
    d = paired_difference(score_rows(BASE_RIGHT), score_rows(OTHER_RIGHT))
    assert (d["n"], d["base_pct"], d["other_pct"], d["diff_pts"]) == (40, 25.0, 75.0, 50.0)
    assert (d["wins"], d["losses"], d["ties"]) == (30, 10, 0)
    assert d["sign_p"] == pytest.approx(P_30_OF_40) and d["sign_p"] < 0.05
    assert 0 < d["ci_pts"][0] < 50 < d["ci_pts"][1] and d["verdict"] == "better"
    assert {k: v["n"] for k, v in d["by_split"].items()} == {"seen": 20, "unseen": 20}
    assert d["by_task"]["gender"]["diff_pts"] == 100.0 and d["by_task"]["pitch"]["diff_pts"] == 0.0
    assert paired_difference(score_rows(BASE_RIGHT), score_rows(OTHER_RIGHT)) == d
    flipped = paired_difference(score_rows(OTHER_RIGHT), score_rows(BASE_RIGHT))
    assert flipped["verdict"] == "worse" and flipped["diff_pts"] == -50.0


def test_paired_difference_identical_runs():
    d = paired_difference(score_rows(OTHER_RIGHT), score_rows(OTHER_RIGHT))
    assert d["diff_pts"] == 0.0 and d["ci_pts"] == [0.0, 0.0]
    assert (d["wins"], d["losses"], d["ties"], d["sign_p"]) == (0, 0, 40, 1.0)
    assert d["verdict"] == "no clear difference"


def test_paired_difference_pairs_only_rows_scored_in_both():
    base = score_rows([1.0, 0.0, None, 1.0]) + score_rows([1.0], prefix="only-base")
    other = score_rows([1.0, 1.0, 1.0, None]) + score_rows([0.0], prefix="only-other")
    other += score_rows([0.0, 0.0], mode="text_ceiling")  # same ids, other mode: not paired
    d = paired_difference(base, other)
    assert (d["n"], d["base_pct"], d["other_pct"], d["wins"], d["ties"]) == (2, 50.0, 100.0, 1, 1)
    assert paired_difference([], other)["n"] == 0


def test_compare_paired_section_and_json(tmp_path):
    runs = [write_run(tmp_path / "a", "untrained", BASE_RIGHT), write_run(tmp_path / "b", "trained", OTHER_RIGHT),
            write_run(tmp_path / "c", "noscores")]
    md = compare(runs, tmp_path / "cmp")
    assert "## Paired difference vs untrained (speech, rows scored in both)" in md
    line = next(x for x in md.splitlines() if x.startswith("| trained | 40 |"))
    assert "| 25.0 | 75.0 | +50.0 |" in line and "| 30 / 10 / 0 | 0.00222 | better |" in line
    assert "| gender | +100.0 (+100.0 … +100.0, n 20) |" in md
    assert "noscores: no scores.jsonl next to its report.json; paired comparison skipped" in md
    assert "| | untrained | trained | noscores |" in md  # the existing sections are still there
    paired = json.loads((tmp_path / "cmp" / "paired.json").read_text())
    assert paired["base"] == "untrained" and set(paired["runs"]) == {"trained"} and "noscores" in paired["skipped"]
    assert paired["runs"]["trained"]["sign_p"] == pytest.approx(P_30_OF_40)
    assert compare(runs, tmp_path / "cmp2") == md
    assert (tmp_path / "cmp2" / "paired.json").read_text() == (tmp_path / "cmp" / "paired.json").read_text()


def test_compare_base_without_scores_notes_it(tmp_path):
    md = compare([write_run(tmp_path / "a", "old"), write_run(tmp_path / "b", "new", OTHER_RIGHT)], tmp_path / "cmp")
    assert "old: no scores.jsonl next to its report.json (the base run, so no run is paired)" in md
    assert "| new |" not in md.split("## Paired difference")[1]
