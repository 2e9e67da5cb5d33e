"""parse_option, numbers, WER and word overlap."""

import pytest

from speech_adapter.eval.scoring import normalize, parse_number, parse_option, score_answer, wer, word_overlap

MF = ["male", "female"]
LEVELS = ["very low", "low", "normal", "high", "very high"]
CASES = [
    ("The speaker is female.", MF, "female"),
    ("FEMALE", MF, "female"),
    ("male", MF, "male"),
    ('{"answer": "female"}', MF, "female"),
    ('```json\n{"answer": "male"}\n```', MF, "male"),
    ('"male"', MF, "male"),
    ("not male", MF, None),
    ("It is not male, it is a female voice", MF, "female"),
    ("male or female", MF, None),
    ("I cannot tell.", MF, None),
    ("", MF, None),
    ("Very low", LEVELS, "very low"),
    ("The pitch is low.", LEVELS, "low"),
    ("very high pitch", LEVELS, "very high"),
    ("The voice is very low-pitched.", LEVELS, "very low"),
    ("a high-pitched voice", LEVELS, "high"),
    ("between low and high", LEVELS, None),
    ("No, the speaker does not mention it.", ["yes", "no"], "no"),
    ("Yes.", ["yes", "no"], "yes"),
    ("scottish english accent", ["American English", "Scottish English"], "Scottish English"),
    ("English", ["American English", "Scottish English"], None),
    # option aliases: whole words, negation and ambiguity as for the literal options
    ("The voice belongs to a woman.", MF, "female"),
    ("A man is talking.", MF, "male"),
    ("Not a woman: a gentleman.", MF, "male"),
    ("The male speaker is a woman.", MF, None),
    ("women and men", MF, None),
    ("The woman is Scottish.", ["American English", "Scottish English"], None),
]


@pytest.mark.parametrize("answer, options, expected", CASES)
def test_parse_option(answer, options, expected):
    assert parse_option(answer, options) == expected


def test_normalize_and_numbers():
    assert normalize("  The Speaker's VOICE,  is: female! ") == "the speaker's voice is female"
    assert parse_number("There are two speakers.") == 2
    assert parse_number('{"answer": 7}') == 7
    assert parse_number("none") is None


def test_wer_and_overlap():
    assert wer("the cat sat", "The cat sat.") == 0.0
    assert wer("the cat sat", "the cat sat on") == pytest.approx(0.25)
    assert wer("a b c d", "x") == 4.0
    assert word_overlap("He said the cat sat.", "the cat sat") == 1.0
    assert word_overlap("cat", "the cat sat") == pytest.approx(1 / 3)


def test_score_answer_metrics():
    assert score_answer("It is female.", "female", "option", MF) == 1.0
    assert score_answer("It is male.", "female", "option", MF) == 0.0
    assert score_answer("3 words", "3", "number") == 1.0
    assert score_answer('{"answer": "the cat sat"}', "the cat sat", "wer") == 1.0
    assert score_answer("anything", None, "open") is None


def test_focus_reads_the_sentences_about_the_attribute():
    long = "The speaker is a woman.\nThe pitch is very high.\nThe speaking speed is slow.\nThe volume is low."
    assert parse_option(long, LEVELS) is None
    assert parse_option(long, LEVELS, focus=("pitch",)) == "very high"
    assert parse_option(long, LEVELS, focus=("volume", "loud")) == "low"
    assert parse_option("The pitch is low or high.", LEVELS, focus=("pitch",)) is None
    assert score_answer(long, "very high", "option", LEVELS, focus=("pitch",)) == 1.0


def test_yes_no_read_from_a_statement_about_the_focus():
    yn, focus = ["yes", "no"], ("speech", "speaking", "voice")
    assert parse_option("This clip holds speech.", yn, focus=focus) == "yes"
    assert parse_option("This clip does not hold speech.", yn, focus=focus) == "no"
    assert parse_option("There is no human speech in this recording, only noise.", yn, focus=focus) == "no"
    assert parse_option("Nobody is speaking.", yn, focus=focus) == "no"
    assert parse_option("Speech is not present in this clip.", yn, focus=focus) == "no"
    assert parse_option('The speaker is speaking: "I am not here."', yn, focus=focus) == "yes"  # quoted
    # no statement about the focus, a hedge, or sentences that disagree: unread
    assert parse_option("This clip holds music.", yn, focus=focus) is None
    assert parse_option("It is unclear whether there is speech.", yn, focus=focus) is None
    assert parse_option("There is speech. There is not a voice.", yn, focus=focus) is None
    # without focus words, or for options other than yes/no, the rule stays off
    assert parse_option("This clip holds speech.", yn) is None
    assert parse_option("This clip holds speech.", ["male", "female"], focus=focus) is None
    assert score_answer("This clip holds speech.", "yes", "option", yn, focus=focus) == 1.0


def test_a_content_question_is_read_by_its_word():
    """Eval rows of content questions carry the asked word as focus: 'did not say "X"' is a no."""
    from speech_adapter.eval.runner import score_row
    from speech_adapter.eval.suite import make_eval_row
    from speech_adapter.templates import TEMPLATES, mention_word

    clip = {"id": "c1", "audio": "/a.wav", "transcript": "The ticket costs twenty pounds."}
    word, present = mention_word(clip)
    template = next(t for t in TEMPLATES if t.task == "content" and "Did the speaker say" in t.text)
    row = make_eval_row(clip, template)
    assert row["focus"] == [word] and row["label"] == ("yes" if present else "no")
    said, not_said = f'The speaker says "{word}".', f'The speaker did not say "{word}".'
    assert score_row(row, not_said, "speech")["score"] == float(not present)
    assert score_row(row, said, "speech")["score"] == float(present)
    other = make_eval_row(clip, next(t for t in TEMPLATES if t.task == "transcription"))
    assert other["focus"] == []
