"""eval.learn_forget: learned / forgot per system, paired against the untrained adapter and the text
ceiling; the table in compare.md and scorecard.json; both plots written beside them."""

import json

import pytest

from speech_adapter.eval import learn_forget
from speech_adapter.eval.report import compare, write_report
from speech_adapter.eval.runner import aggregate
from speech_adapter.utils.io import write_jsonl_atomic

N = 8  # eval rows r0..r7: r0-r3 format-constrained (r0, r1 ask for JSON), r4-r7 plain
JSON_RULE = [{"id": "json", "kwargs": {"keys": ["answer"]}}]
LOWER_RULE = [{"id": "lowercase", "kwargs": {}}]


def rows(mode, correct, if_ok, json_ok=None):
    """scores.jsonl rows of one mode: `correct` rows scored 1 (the rest 0), the first `if_ok`
    constrained rows passing their rule; JSON rows r0, r1 answer valid JSON for the first `json_ok`."""
    json_ok = if_ok if json_ok is None else json_ok
    out = []
    for i in range(N):
        rule = JSON_RULE if i < 2 else LOWER_RULE if i < 4 else []
        output = '{"answer": "male"}' if i < 2 and i < json_ok else "Male."
        out.append({"id": f"r{i}", "task": "gender", "split": ["seen", "unseen"][i % 2], "mode": mode,
                    "template_id": "t", "kind": "constrained" if rule else "plain", "metric": "option",
                    "label": "male", "output": output, "score": float(i < correct), "constraints": rule,
                    "format": {rule[0]["id"]: i < if_ok} if rule else {}, "format_ok": (i < if_ok) if rule else None})
    return out


# system -> (modes with (correct, if_ok, json_ok), training keys)
CEILING = ("text_ceiling", 4, 4, 2)
SYSTEMS = {
    "untrained": ([("speech", 2, 2, 2)], None),
    "task_sft": ([("speech", 6, 0, 0), CEILING], {"objective": "task_sft", "lora_rank": 0}),
    "self_distill": ([("speech", 4, 4, 2), CEILING], {"objective": "self_distill", "lora_rank": 0}),
    "task_sft_lora4": ([("speech", 7, 0, 0), CEILING, ("text_retention", 4, 1, 1)],
                       {"objective": "task_sft", "lora_rank": 4}),
    "self_distill_lora4": ([("speech", 4, 4, 2), CEILING, ("text_retention", 4, 4, 2)],
                           {"objective": "self_distill", "lora_rank": 4}),
    "task_sft_replay": ([("speech", 6, 2, 2), CEILING, ("text_retention", 4, 3, 2)],
                        {"objective": "task_sft", "lora_rank": 4, "text_mix": 0.3}),
}


def write_system(root, name):
    modes, training = SYSTEMS[name]
    scored = [r for m in modes for r in rows(*m)]
    rep = aggregate(scored)
    rep.update(system=name, n_rows=N)
    if training:
        rep["training"] = {"text_mix": 0.0, "hard_token_filter": 0.0, **training}
    d = root / name
    write_report(rep, d)
    write_jsonl_atomic(d / "scores.jsonl", scored)
    return d


@pytest.fixture
def runs(tmp_path):
    return [write_system(tmp_path, n) for n in SYSTEMS]


def test_table_values(runs):
    from speech_adapter.eval.report import load_report
    from speech_adapter.utils.io import read_jsonl

    table = learn_forget.build([(d.name, load_report(d), read_jsonl(d / "scores.jsonl")) for d in runs])
    by = {e["name"]: e for e in table["rows"]}
    assert [e["name"] for e in table["rows"]] == list(SYSTEMS) and table["ceiling_from"] == "task_sft"
    assert by["untrained"]["learned"] is None
    assert by["untrained"]["forgot_if_speech"]["diff_pts"] == pytest.approx(50.0)  # 2 of 4 vs 4 of 4
    sft = by["task_sft"]
    assert sft["learned"]["diff_pts"] == pytest.approx(50.0) and sft["learned"]["n"] == N  # 6/8 vs 2/8
    assert sft["forgot_if_speech"] == {"n": 4, "diff_pts": 100.0, "ci_pts": [100.0, 100.0],
                                       "base_pct": 0.0, "other_pct": 100.0}
    assert sft["forgot_json_speech"]["n"] == 2 and sft["forgot_json_speech"]["diff_pts"] == pytest.approx(100.0)
    assert sft["forgot_if_text"] is None  # no LoRA: no text_retention rows
    assert by["self_distill"]["forgot_if_speech"]["diff_pts"] == pytest.approx(0.0)
    assert by["task_sft_lora4"]["forgot_if_text"]["diff_pts"] == pytest.approx(75.0)  # 1 of 4 vs 4 of 4
    assert by["task_sft_lora4"]["forgot_json_text"]["diff_pts"] == pytest.approx(50.0)
    assert by["task_sft_replay"]["text_mix"] == 0.3


def test_no_table_without_untrained_or_ceiling(runs):
    from speech_adapter.eval.report import load_report
    from speech_adapter.utils.io import read_jsonl

    loaded = [(d.name, load_report(d), read_jsonl(d / "scores.jsonl")) for d in runs]
    assert learn_forget.build(loaded[1:]) is None  # no untrained run
    assert learn_forget.build(loaded[:1]) is None  # no text ceiling


def test_compare_writes_the_table_and_both_plots(runs, tmp_path):
    out = tmp_path / "cmp"
    md = compare(runs, out)
    section = md.split("## Learn vs forget")[1].split("\n## ")[0]
    table_rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| system")]
    assert [r.split(" | ")[0][2:] for r in table_rows] == list(SYSTEMS)  # one row per system
    assert "| task_sft | task_sft | none | 0 | 0 | +50.0 (" in section
    card = json.loads((out / "scorecard.json").read_text())
    assert [e["name"] for e in card["learn_forget"]["rows"]] == list(SYSTEMS)
    for name in (learn_forget.LEARN_FORGET_PNG, learn_forget.LORA_RANK_PNG):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 5000


def test_no_rank_curve_without_a_lora_system(tmp_path):
    dirs = [write_system(tmp_path / "runs", n) for n in ("untrained", "task_sft", "self_distill")]
    out = tmp_path / "cmp"
    compare(dirs, out)
    assert (out / learn_forget.LEARN_FORGET_PNG).exists()
    assert not (out / learn_forget.LORA_RANK_PNG).exists()  # every system at rank 0: nothing to plot
    assert "Plots: learn_forget.png." in (out / "compare.md").read_text()
