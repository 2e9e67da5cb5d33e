"""Template registry invariants: counts, unique ids, both splits, options in text, labels."""

import re

import pytest

from speech_adapter.errors import DataError
from speech_adapter.eval.constraints import CHECKERS
from speech_adapter.templates import TASKS, TEMPLATES, applicable, mention_word, render, templates_for

ROW = {"id": "clip-1", "transcript": "The quick brown fox jumps over the lazy dog", "language": "en",
       "duration": 3.1, "meta": {"gender": "female", "accent": "Scottish English", "rate": 175, "pitch": 60,
                                 "volume": 100, "snr_db": None, "speakers": 1}}


def test_ids_unique_and_texts_unique():
    assert len({t.id for t in TEMPLATES}) == len(TEMPLATES)
    assert len({t.text for t in TEMPLATES}) == len(TEMPLATES)
    assert all(re.fullmatch(rf"{t.task}\.\d\d", t.id) for t in TEMPLATES)


@pytest.mark.parametrize("task", list(TASKS))
def test_task_has_enough_templates_in_both_splits(task):
    ts = templates_for(task)
    assert len(ts) >= 10
    seen = [t for t in ts if t.split == "seen"]
    assert len(seen) and len(ts) - len(seen)
    assert 0.45 <= len(seen) / len(ts) <= 0.75
    assert {t.kind for t in ts} == {"plain", "constrained"}


@pytest.mark.parametrize("task", list(TASKS))
def test_rendered_options_appear_and_label_is_an_option(task):
    assert applicable(task, ROW)
    opts, label = TASKS[task].options(ROW), TASKS[task].label(ROW)
    for t in templates_for(task):
        text = render(t, ROW)
        assert "{" not in text
        if TASKS[task].metric == "option":
            assert label in opts
            assert ", ".join(opts) in text
        for c in t.constraints:
            assert c["id"] in CHECKERS


def test_labels_from_bins_override_meta():
    row = dict(ROW, bins={"pitch": "Very high", "speed": "Very slow", "volume": "Low",
                          "duration": "Very short", "noise": "Medium"})
    got = {k: TASKS[k].label(row) for k in ("pitch", "speed", "volume", "duration", "noise")}
    assert got == {"pitch": "very high", "speed": "very slow", "volume": "low", "duration": "very short",
                   "noise": "medium"}
    assert TASKS["duration"].label(ROW) == "medium" and TASKS["noise"].label(ROW) == "very low"
    assert TASKS["gender"].label(ROW) == "female" and TASKS["language"].label(ROW) == "English"
    assert TASKS["word_count"].label(ROW) == "9" and TASKS["speaker_count"].label(ROW) == "1"


def test_mention_word_label_matches_transcript():
    for i in range(20):
        row = dict(ROW, id=f"c{i}")
        word, present = mention_word(row)
        assert (word in ROW["transcript"].lower()) == present
        assert TASKS["content"].label(row) == ("yes" if present else "no")


def test_rows_missing_attributes_are_not_applicable():
    assert not applicable("gender", {"id": "x", "meta": {}})
    assert applicable("describe", {"id": "x"})
    with pytest.raises(DataError, match="meta.gender"):
        render(templates_for("gender")[0], {"id": "x", "meta": {}})
    with pytest.raises(DataError, match="unknown task"):
        templates_for("gendr")


def test_no_unseen_text_inside_a_seen_template():
    from speech_adapter.eval.suite import find_unseen_leaks

    seen = [{"id": t.id, "template_id": t.id, "instruction": render(t, ROW)} for t in templates_for(split="seen")]
    assert find_unseen_leaks(templates_for(split="unseen"), seen) == []
