"""Every constraint checker with passing and failing outputs (table-driven)."""

import pytest

from speech_adapter.errors import DataError
from speech_adapter.eval.constraints import CHECKERS, check, check_all, instruction_text

CASES = [
    # (id, kwargs, text, expected)
    ("json", {}, '{"answer": "female"}', True),
    ("json", {}, '  {"answer": "female"}\n', True),
    ("json", {}, 'Sure! {"answer": "female"}', False),
    ("json", {"keys": ["answer"]}, '{"answer": "male"}', True),
    ("json", {"keys": ["answer"]}, '{"label": "male"}', False),
    ("json", {"keys": ["answer"]}, '["answer"]', False),
    ("json", {"keys": ["answer"]}, '```json\n{"answer": "male"}\n```', False),
    ("json", {"keys": ["answer"], "lenient": True}, '```json\n{"answer": "male"}\n```', True),
    ("json", {"keys": ["answer"], "lenient": True}, '```\n{"answer": "male"}```', True),
    ("json", {"lenient": True}, '```json\n{"answer": \n```', False),
    ("lowercase", {}, "the speaker is female.", True),
    ("lowercase", {}, "The speaker is female.", False),
    ("lowercase", {}, "123 ...", False),
    ("uppercase", {}, "THE SPEAKER IS FEMALE.", True),
    ("uppercase", {}, "THE SPEAKER is FEMALE.", False),
    ("quoted", {}, '"female"', True),
    ("quoted", {}, ' "the speaker is female" \n', True),
    ("quoted", {}, '"female', False),
    ("quoted", {}, "'female'", False),
    ("title", {}, "<<Summary>>\nA woman speaks.", True),
    ("title", {}, "<<>> A woman speaks.", False),
    ("title", {}, "Summary: A woman speaks.", False),
    ("starts_with", {"prefix": "Answer:"}, "  Answer: female", True),
    ("starts_with", {"prefix": "Answer:"}, "The answer: female", False),
    ("ends_with", {"suffix": "That is all."}, "Female. That is all.\n", True),
    ("ends_with", {"suffix": "That is all."}, "That is all. Female.", False),
    ("num_words", {"n": 3, "relation": "<="}, "a female speaker", True),
    ("num_words", {"n": 3, "relation": "<="}, "it is a female speaker", False),
    ("num_words", {"n": 3, "relation": ">="}, "it is a female speaker", True),
    ("num_words", {"n": 3, "relation": ">="}, "female", False),
    ("num_words", {"n": 2, "relation": "=="}, "female speaker", True),
    ("num_words", {"n": 2, "relation": "=="}, "a female speaker", False),
    ("num_sentences", {"n": 1, "relation": "=="}, "A woman speaks quickly.", True),
    ("num_sentences", {"n": 1, "relation": "=="}, "A woman speaks. She is fast!", False),
    ("num_sentences", {"n": 2, "relation": ">="}, "A woman speaks. She is fast!", True),
    ("num_sentences", {"n": 2, "relation": "<="}, "One. Two. Three?", False),
    ("num_bullets", {"n": 3, "relation": "=="}, "* female\n* fast\n* loud", True),
    ("num_bullets", {"n": 3, "relation": "=="}, "- female\n- fast", False),
    ("num_bullets", {"n": 2, "relation": ">="}, "1. female\n2. fast\n3. loud", True),
    ("num_bullets", {"n": 1, "relation": "<="}, "*not a bullet*\nplain", True),
    ("no_comma", {}, "female and fast", True),
    ("no_comma", {}, "female, fast", False),
    ("one_word", {}, "Female.", True),
    ("one_word", {}, '"yes"', True),
    ("one_word", {}, "female speaker", False),
    ("one_word", {}, "", False),
]


@pytest.mark.parametrize("cid, kwargs, text, expected", CASES)
def test_checker(cid, kwargs, text, expected):
    assert check(cid, text, **kwargs) is expected


def test_every_checker_is_tested_both_ways():
    for cid in CHECKERS:
        outcomes = {exp for c, _, _, exp in CASES if c == cid}
        assert outcomes == {True, False}, cid


@pytest.mark.parametrize("cid", list(CHECKERS))
def test_instruction_text_exists(cid):
    text = instruction_text(cid, keys=["answer"], n=3, relation="<=", prefix="Answer:", suffix="Done.")
    assert text.endswith(".") and len(text) > 10


def test_check_all_keys_and_repeats():
    cons = [{"id": "lowercase", "kwargs": {}}, {"id": "num_words", "kwargs": {"n": 5, "relation": "<="}},
            {"id": "num_words", "kwargs": {"n": 2, "relation": ">="}}]
    assert check_all(cons, "a female voice") == {"lowercase": True, "num_words": True, "num_words#2": True}
    assert check_all([], "x") == {}


def test_unknown_id_and_bad_kwargs_are_clear():
    with pytest.raises(DataError, match="did you mean 'lowercase'"):
        check("lowercas", "x")
    with pytest.raises(DataError, match="bad kwargs"):
        check("starts_with", "x", prefx="A")
    with pytest.raises(DataError, match="relation"):
        check("num_words", "x", n=1, relation="<")
