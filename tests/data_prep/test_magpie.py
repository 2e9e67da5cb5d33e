"""data_prep.magpie: instructions from the bare user-turn prefix, answers, filters, resume."""

import json

from data_prep.magpie import MagpieConfig, magpie, user_turn_prefix
from data_prep.teacher import FakeTeacher
from tests.data_prep.test_teacher import tiny_teacher

INSTRUCTIONS = ["Give me three tips for sleeping better at night.", "hi",
                "Give me three tips for sleeping better at night!", "Explain why the sky is blue to a child.",
                "Write a haiku about the sea in winter.", "Your #HGKCanIUse_A^HGK0A^J is on HAGG site x9Z_q."]
ANSWERS = {"sleeping": "Keep a regular schedule, avoid screens late and keep the room cool.",
           "sky": "Sunlight scatters off air molecules, and blue light scatters the most.",
           "haiku": "As an AI, I cannot write poems."}


def fake() -> FakeTeacher:
    rules = [{"contains": f"{k}", "answers": [v]} for k, v in ANSWERS.items()]
    # the bare prefix "<user>" has no assistant turn: it gets the scripted instructions in order
    return FakeTeacher({"rules": rules + [{"contains": "<user>", "answers": INSTRUCTIONS}]})


def read(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_prefix_stops_where_the_user_writes():
    teacher = tiny_teacher()
    assert user_turn_prefix(teacher) == "<|im_start|>user\n"
    assert user_turn_prefix(fake()) == "<user>"


def test_magpie_rows_and_filters(tmp_path):
    cfg = MagpieConfig(output=str(tmp_path / "magpie.jsonl"), num_candidates=6, batch_size=2, quiet=True)
    stats = magpie(cfg, teacher=fake())
    rows = read(tmp_path / "magpie.jsonl")
    assert [r["instruction"] for r in rows] == [INSTRUCTIONS[0], INSTRUCTIONS[3]]
    assert all(r["audio"] is None and r["kind"] == "text" and r["response"] for r in rows)
    assert rows[1]["response"] == ANSWERS["sky"]
    reasons = {r["id"]: r["reason"] for r in read(tmp_path / "rejects.jsonl")}
    assert "too short" in reasons["magpie-000001"]
    assert "duplicate" in reasons["magpie-000002"]
    assert "refusal" in reasons["magpie-000004"]
    assert "not plain language" in reasons["magpie-000005"]
    assert stats["kept"] == 2 and stats["rejected"] == 4
    # a rerun finds every slot done and writes nothing new
    again = magpie(cfg, teacher=fake())
    assert again["candidates"] == 0 and len(read(tmp_path / "magpie.jsonl")) == 2


def test_magpie_with_a_real_tiny_model(tmp_path):
    cfg = MagpieConfig(output=str(tmp_path / "m.jsonl"), num_candidates=3, batch_size=3, quiet=True,
                       max_instruction_tokens=12, max_new_tokens=12, min_instruction_words=1, max_words=500)
    stats = magpie(cfg, teacher=tiny_teacher())
    rows, rejects = read(tmp_path / "m.jsonl"), read(tmp_path / "rejects.jsonl")
    assert stats["candidates"] == 3 and len(rows) + len(rejects) == 3
    assert all(r["teacher"]["sampling"]["instruction"]["do_sample"] for r in rows)
