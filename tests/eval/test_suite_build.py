"""Suite building: held-out clips only, both splits per task, deterministic; the unseen-leak check."""

import json

import pytest

from speech_adapter.errors import DataError
from speech_adapter.eval.suite import (SuiteConfig, build_suite, check_unseen_leak, find_unseen_leaks, load_rows,
                                       training_keys)
from speech_adapter.templates import TASKS, templates_for


def corpus(n=12):
    return [{"id": f"c{i:02d}", "audio": f"/data/c{i:02d}.wav", "transcript": f"hello world number {i} again",
             "language": "en", "duration": 2.0 + i, "description": f"[00:00-00:02] hello ({i})",
             "meta": {"gender": "female" if i % 2 else "male", "accent": "American English", "rate": 175,
                      "pitch": 50, "volume": 100, "snr_db": None, "speakers": 1}} for i in range(n)]


def test_build_covers_tasks_and_splits_deterministically():
    cfg = SuiteConfig(n_per_task=3, seed=1)
    rows, stats = build_suite(corpus(), cfg)
    again, _ = build_suite(corpus(), cfg)
    assert rows == again
    other, _ = build_suite(corpus(), SuiteConfig(n_per_task=3, seed=2))
    assert other != rows
    for task in TASKS:
        splits = [r["split"] for r in rows if r["task"] == task]
        assert splits.count("seen") == 3 and splits.count("unseen") == 3, task
    assert len({r["id"] for r in rows}) == len(rows)
    keys = {"id", "task", "audio", "transcript", "meta", "instruction", "template_id", "split", "constraints",
            "options", "label", "metric"}
    assert all(keys <= set(r) for r in rows)
    for r in rows:
        if r["metric"] == "option":
            assert r["label"] in r["options"] and ", ".join(r["options"]) in r["instruction"]
    assert stats["rows"] == len(rows) == 6 * len(TASKS)


def test_build_excludes_training_clips(tmp_path):
    ids = tmp_path / "train_ids.txt"
    ids.write_text("c00\nc01\n")
    distilled = tmp_path / "distilled.jsonl"
    distilled.write_text(json.dumps({"id": "d1", "clip_id": "c02", "audio": "/data/c03.wav",
                                     "instruction": "x", "response": "y"}) + "\n")
    train_ids, train_audio = training_keys([ids, distilled])
    rows, stats = build_suite(corpus(), SuiteConfig(n_per_task=50), train_ids, train_audio)
    used = {r["clip_id"] for r in rows}
    assert used.isdisjoint({"c00", "c01", "c02", "c03"}) and len(used) == 8
    assert stats["dropped_training_clips"] == 4
    with pytest.raises(DataError, match="appear in training"):
        build_suite(corpus(), SuiteConfig(on_training_clip="error"), train_ids, train_audio)


def test_load_rows_resolves_audio_relative_to_jsonl(tmp_path):
    p = tmp_path / "sub" / "corpus.jsonl"
    p.parent.mkdir()
    p.write_text(json.dumps({"id": "a", "audio": "wavs/a.wav"}) + "\n")
    assert load_rows(p)[0]["audio"] == str((p.parent / "wavs/a.wav").resolve())


def test_leak_check_catches_planted_leaks():
    rows, _ = build_suite(corpus(), SuiteConfig(n_per_task=2))
    seen_row = next(r for r in rows if r["split"] == "seen")
    unseen_row = next(r for r in rows if r["split"] == "unseen")
    clean = [{"id": "t1", "template_id": seen_row["template_id"], "instruction": seen_row["instruction"]}]
    check_unseen_leak(rows, clean)  # seen templates in training are the point, not a leak
    check_unseen_leak(templates_for(), clean)
    by_id = [{"id": "t2", "template_id": unseen_row["template_id"], "instruction": "something else"}]
    with pytest.raises(DataError, match="unseen templates occur in training"):
        check_unseen_leak(rows, clean + by_id)
    # the text planted inside a teacher prompt, under a seen template id
    by_text = [{"id": "t3", "template_id": seen_row["template_id"],
                "instruction": "Audio: [desc]\n\n" + unseen_row["instruction"]}]
    leaks = find_unseen_leaks(rows, clean + by_text)
    assert leaks and leaks[0]["reason"] == "instruction text" and leaks[0]["training_row"] == "t3"
    # Template objects: placeholders match any filled-in options
    assert find_unseen_leaks([t for t in templates_for() if t.id == unseen_row["template_id"]], by_text)


def test_json_fraction_and_bare_fraction_shape_the_rows():
    default, _ = build_suite(corpus(), SuiteConfig(n_per_task=12, seed=3))
    same, _ = build_suite(corpus(), SuiteConfig(n_per_task=12, seed=3, json_fraction=None, bare_fraction=0.0))
    assert default == same  # the knobs at their defaults leave old suites as they were

    def json_share(rows):
        con = [r for r in rows if r["kind"] == "constrained"]
        return sum(any(c["id"] == "json" for c in r["constraints"]) for r in con) / len(con)

    all_json, _ = build_suite(corpus(), SuiteConfig(n_per_task=12, seed=3, constrained_fraction=1.0, json_fraction=1.0))
    no_json, _ = build_suite(corpus(), SuiteConfig(n_per_task=12, seed=3, constrained_fraction=1.0, json_fraction=0.0))
    assert json_share(no_json) == 0.0 and json_share(all_json) > json_share(default)
    with_json = {(t, sp) for t in TASKS for sp in ("seen", "unseen")
                 if any(any(dict(c)["id"] == "json" for c in tp.constraints) for tp in templates_for(t, sp, "constrained"))}
    assert with_json
    assert all(any(c["id"] == "json" for c in r["constraints"]) for r in all_json if (r["task"], r["split"]) in with_json)

    bare, _ = build_suite(corpus(), SuiteConfig(n_per_task=12, seed=3, constrained_fraction=0.0, bare_fraction=1.0))
    gender = [r for r in bare if r["task"] == "gender"]
    assert gender and all(r["template_id"].endswith(":bare") for r in gender)
    assert all("female, male" not in r["instruction"] for r in gender)  # asked without its option list
    assert all(r["options"] == ["female", "male"] and r["label"] in r["options"] for r in gender)  # still scored


@pytest.mark.parametrize("key", ["json_fraction", "bare_fraction"])
def test_fraction_knobs_are_validated(key):
    from speech_adapter.errors import ConfigError
    with pytest.raises(ConfigError, match=key):
        SuiteConfig(**{key: 1.5}).validate()
