"""WER compares numbers digit by digit and scores the quoted words of a framed transcript."""

import pytest

from speech_adapter.eval.scorecard import corpus_wer
from speech_adapter.eval.scoring import normalize, quoted_span, score_answer, spoken_digits, wer
from speech_adapter.prompts import teacher_user_message


@pytest.mark.parametrize("written, spoken", [
    ("645-3364", "six four five three three six four"),     # AN4's phone numbers
    ("363-0962", "three six three oh nine six two"),         # "oh" between digits is zero
    ("room 21", "room twenty one"),
    ("at 3 o'clock", "at three o'clock"),
    ("40 minutes", "forty minutes"),
    ("15", "fifteen"),
])
def test_written_and_spoken_numbers_meet(written, spoken):
    assert wer(written, spoken) == 0.0
    assert wer(spoken, written) == 0.0


def test_different_numbers_still_count_as_errors():
    assert wer("645-3365", "six four five three three six four") == pytest.approx(1 / 7)
    assert wer("oh I see", "oh i see") == 0.0  # "oh" outside a digit run stays a word
    assert spoken_digits(normalize("oh nine").split()) == ["oh", "9"]


def test_framed_transcript_is_scored_on_its_quoted_words():
    reply = 'I heard someone say: "Please call Stella."'
    assert quoted_span(reply) == "Please call Stella."
    assert score_answer(reply, "please call stella", "wer") == 1.0
    assert score_answer("Please call Stella.", "please call stella", "wer") == 1.0  # nothing quoted: all of it
    assert score_answer('The word "call" was said.', "please call stella", "wer") < 0.5
    # an unquoted transcript after a short lead-in is scored on what follows the colon, as a quoted one
    assert quoted_span("Transcript of the audio: Please call Stella.") == "Please call Stella."
    assert score_answer("The speaker said: please call Stella", "please call stella", "wer") == 1.0
    assert quoted_span("Note: call Stella: now") == "call Stella: now"  # only the first lead-in goes
    long_lead = "When I listened to this clip very carefully I heard: please call Stella"
    assert quoted_span(long_lead) == long_lead  # more than six words before the colon: part of the answer
    assert quoted_span("Time 10:30 please") == "Time 10:30 please"  # a colon inside a token is no lead-in
    assert quoted_span("Sure! Here's the transcription: call Stella") == "call Stella"


def test_corpus_wer_counts_reference_digits():
    # 7 reference digits, one wrong: 1/7, whether the reference is written or spoken
    assert corpus_wer([("645-3365", "six four five three three six four")]) == pytest.approx(1 / 7)


def test_listener_text_names_the_gender_both_ways():
    """Given only "a man", the 0.5B backbone answered "Is the speaker male or female?" with
    "female" for half the men: the listener text says "male speaker" and "man"."""
    male = teacher_user_message("[00:00-00:02] Hello there. (Gender: Male, Pitch: Low, Duration: 2s)", "Q?")
    female = teacher_user_message("[00:00-00:02] Hello there. (Gender: Female, Duration: 2s)", "Q?")
    assert "a male speaker, a man, say" in male and "His voice" in male
    assert "a female speaker, a woman, say" in female and "female" not in male
    silent = teacher_user_message("[00:00-00:02] (Gender: Male, Duration: 2s)", "Q?")
    assert "I heard a male speaker, a man, but no clear words." in silent
