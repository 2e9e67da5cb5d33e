"""The scorecard: degenerate replies, IF Δ, JSON validity and keys, WER, the paired flag, and the
block at the top of report.md / compare.md with 20 raw replies (hand-made scored rows)."""

import json

import pytest

from speech_adapter.eval import scorecard
from speech_adapter.eval.report import compare, write_report
from speech_adapter.eval.runner import evaluate

JSON_C = [{"id": "json", "kwargs": {"keys": ["answer"]}}]


@pytest.mark.parametrize("text, loop", [
    ("Female, Female, Female, Female", True),
    ("female female female", False),
    ("The speaker is female. The speaker is female. The speaker is female. The speaker is female.", True),
    ("I hear a man. I hear a man. I hear a man.", True),  # most trigrams repeat earlier ones
    ("I hear a man speaking slowly in a calm, low voice about the weather today.", False),
    ("ha" * 12, True),  # no spaces to split on
    ("", False),
])
def test_is_loop(text, loop):
    assert scorecard.is_loop(text) is loop


@pytest.mark.parametrize("text, stop, want", [
    ("Female, Female, Female, Female", "eos", {"loop": True, "empty": False, "cut_off": False}),
    ("  ", "eos", {"loop": False, "empty": True, "cut_off": False}),
    ("The speaker sounds like a woman who", "length", {"loop": False, "empty": False, "cut_off": True}),
    ("Female.", None, {"loop": False, "empty": False, "cut_off": None}),  # older caches: stop unknown
])
def test_degenerate(text, stop, want):
    assert scorecard.degenerate(text, stop) == want


def scored(i, mode, task="gender", output="female", score=1.0, split="seen", constraints=(), ok=None,
           label="female", metric="option", stop="eos"):
    fmt = {} if ok is None else {c["id"]: ok for c in constraints}
    return {"id": f"r{i}", "task": task, "split": split, "mode": mode, "kind": "constrained" if fmt else "plain",
            "metric": metric, "label": label, "instruction": f"question {i}", "constraints": list(constraints),
            "output": output, "stop": stop, "score": score, "format": fmt,
            "format_ok": all(fmt.values()) if fmt else None}


def json_rows(mode):
    return [scored(0, mode, output='{"answer": "female"}', constraints=JSON_C, ok=True),
            scored(1, mode, output='```json\n{"answer": "male"}\n```', score=0.0, constraints=JSON_C, ok=False),
            scored(2, mode, output='{"result": "female"}', score=1.0, constraints=JSON_C, ok=False),
            scored(3, mode, output="female", constraints=JSON_C, ok=False)]


def test_column_numbers_json_wer_degenerate():
    rows = json_rows("speech") + [
        scored(4, "speech", task="transcription", output="hello there", score=2 / 3, metric="wer",
               label="hello there friend", split="unseen"),
        scored(5, "speech", task="transcription", output="Female, Female, Female, Female", score=0.0,
               metric="wer", label="hello their friend", split="unseen", stop="length"),
        scored(6, "speech", output="", score=0.0, split="unseen")]
    s = scorecard.column_stats(rows)
    assert s["json"] == {"n": 4, "valid": 2, "fenced_valid": 3, "keys": 2, "answer_n": 4, "answer": 0.25}
    assert s["wer"] == pytest.approx((1 + 4) / 6)  # corpus WER: 1 edit of 3, then 4 edits of 3
    assert s["if_n"] == 4 and s["if_rate"] == 0.25
    d = s["degenerate"]
    assert (d["loop"], d["empty"], d["cut_off"], d["any"]) == pytest.approx((1 / 7, 1 / 7, 1 / 7, 2 / 7))
    assert s["tasks"]["transcription"]["unseen"] == pytest.approx(1 / 3) and s["tasks"]["gender"]["seen"] == 0.75


def paired_runs(n=24):
    """untrained right on everything; trained right on gender, wrong on pitch; ceiling/cascade rows."""
    untrained = [scored(i, "speech", task="gender" if i < n // 2 else "pitch") for i in range(n)]
    trained = [scored(i, "speech", task="gender" if i < n // 2 else "pitch", score=float(i < n // 2),
                      output="Female, Female, Female, Female" if i >= n // 2 else "female") for i in range(n)]
    trained += [scored(i, "text_ceiling", constraints=JSON_C, ok=i % 2 == 0) for i in range(n)]
    trained += [scored(i, "cascade", constraints=JSON_C, ok=i % 4 == 0) for i in range(n)]
    return [("untrained", untrained), ("trained", trained)]


def test_build_if_delta_and_paired_flag():
    card = scorecard.build(paired_runs(), trained_tasks={"trained": ["gender"]})
    assert list(card["columns"]) == ["untrained speech", "trained speech", "cascade", "text_ceiling"]
    cols = card["columns"]
    assert cols["text_ceiling"]["if_rate"] == 0.5 and cols["cascade"]["if_rate"] == 0.25
    assert cols["cascade"]["if_delta"] == pytest.approx(-0.5) and cols["text_ceiling"]["if_delta"] is None
    tasks = card["paired"]["runs"]["trained speech"]["tasks"]
    assert card["paired"]["base"] == "untrained speech"
    assert tasks["pitch"]["flag"] and tasks["pitch"]["not_trained"] and tasks["pitch"]["diff_pts"] == -100.0
    assert not tasks["gender"]["flag"] and tasks["gender"]["not_trained"] is False
    assert [(f["run"], f["task"], f["not_trained"]) for f in card["flags"]] == [("trained speech", "pitch", True)]
    md = scorecard.markdown(card)
    assert "⚠ worse, not trained on" in md and "flags: 1 task(s) worse than untrained speech" in md
    assert "| Δ IF vs text ceiling | – | – | -0.50 | ref |" in md


def test_raw_replies_are_deterministic_spread_and_escaped():
    runs = paired_runs()
    raw = scorecard.build(runs)["raw_replies"]
    assert len(raw) == 20 and raw == scorecard.build(runs)["raw_replies"]
    assert [r["task"] for r in raw[:4]] == ["gender", "pitch", "gender", "pitch"]  # round robin over tasks
    next(r for r in runs[1][1] if r["id"] == raw[0]["id"])["output"] = "a | b\nc <<title>>"
    card = scorecard.build(runs)
    assert set(card["raw_replies"][0]["replies"]) == set(card["columns"])
    md = scorecard.markdown(card)
    assert "a \\| b<br>c &lt;&lt;title&gt;&gt;" in md
    table = md.split("raw replies")[1]
    assert sum(line.startswith("| ") and line[2].isdigit() for line in table.splitlines()) == 20


class Gen:
    def __init__(self, replies):
        self.replies = replies

    def __call__(self, batch, mode):
        return [self.replies(mode, r) for r in batch]


def suite_rows(n=24):
    return [{"id": f"c{i}", "task": "gender" if i % 2 else "transcription", "split": ["seen", "unseen"][i % 3 == 0],
             "kind": "constrained" if i % 4 == 1 else "plain", "audio": f"/c{i}.wav", "description": "d",
             "transcript": "hello there friend", "instruction": f"Question {i}? | pipes\nand lines",
             "options": ["female", "male"] if i % 2 else None, "label": "female" if i % 2 else "hello there friend",
             "metric": "option" if i % 2 else "wer", "constraints": JSON_C if i % 4 == 1 else []}
            for i in range(n)]


def test_report_md_has_scorecard_on_top_and_scorecard_json(tmp_path):
    rows = suite_rows()
    untrained = Gen(lambda m, r: {"output": "Male, Male, Male, Male", "stop": "length"})
    trained = Gen(lambda m, r: {"output": '{"answer": "female"}' if r["constraints"] else "female",
                                "stop": "eos", **({"asr": "hello there"} if m == "cascade" else {})})
    shared = tmp_path / "suite.backbone.jsonl"
    write_report(evaluate(rows, {"speech": untrained}, system="untrained", out_dir=tmp_path / "untrained",
                          progress=False, shared_cache=shared), tmp_path / "untrained")
    rep = evaluate(rows, {m: trained for m in ("speech", "text_ceiling", "cascade")}, system="trained",
                   out_dir=tmp_path / "trained", progress=False, shared_cache=shared)
    rep["trained_tasks"] = ["gender"]
    paths = write_report(rep, tmp_path / "trained", peers=[tmp_path / "untrained", tmp_path / "missing"])
    md = paths["md"].read_text()
    assert md.index("## Scorecard") < md.index("## Accuracy per task")  # the scorecard is the top block
    assert "| | untrained speech | trained speech | cascade | text_ceiling |" in md
    assert "### 20 raw replies" in md and "Question 1? \\| pipes<br>and lines" in md
    assert "Male, Male, Male, Male *[cut off]*" in md
    card = json.loads(paths["scorecard"].read_text())
    assert card["columns"]["untrained speech"]["degenerate"]["loop"] == 1.0
    assert card["columns"]["untrained speech"]["degenerate"]["cut_off"] == 1.0
    assert card["columns"]["cascade"]["asr_wer"] == pytest.approx(1 / 3)
    assert card["columns"]["trained speech"]["json"]["valid"] == 6
    assert card["paired"]["runs"]["trained speech"]["tasks"]["gender"]["verdict"] == "better"
    compare([tmp_path / "untrained", tmp_path / "trained"], tmp_path / "cmp")
    cmp = (tmp_path / "cmp" / "compare.md").read_text()
    assert cmp.index("## Scorecard") < cmp.index("## Speech accuracy per task")
    assert json.loads((tmp_path / "cmp" / "scorecard.json").read_text())["columns"] == card["columns"]
