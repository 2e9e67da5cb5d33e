"""The `speech` and `sound` tasks, and which tasks a clip without speech is asked."""

import pytest

from speech_adapter.eval.scoring import parse_option
from speech_adapter.templates import SOUND_KINDS, TASKS, applicable, get_template, render, templates_for

SPEECH = {"id": "s1", "transcript": "The quick brown fox jumps over the lazy dog", "language": "en", "duration": 3.1,
          "bins": {"pitch": "High", "speed": "Fast", "volume": "Normal", "duration": "Medium", "noise": "Low"},
          "meta": {"speech": True, "gender": "female", "accent": "Scottish English", "snr_db": 20.0, "speakers": 1}}
# a synthetic tone as data synth + data attributes leave it (bins: no pitch, speed or noise)
TONE = {"id": "n1", "transcript": "", "language": None, "duration": 3.2,
        "bins": {"pitch": None, "speed": None, "volume": "High", "duration": "Medium", "noise": None},
        "meta": {"speech": False, "sound": "tone", "tone_hz": [880.0], "speakers": 0, "source": "synthetic"}}
# a real non-speech clip (resources/real): no bins, no transcript, no speaker count
ANIMAL = {"id": "animal-hens", "transcript": None, "language": None, "duration": 10.0,
          "meta": {"speech": False, "sound": "animal"}}
NON_SPEECH_TASKS = {"volume", "duration", "speaker_count", "describe", "speech", "sound"}
# the first templates of each new task, pinned: ids are stable, new ones only appended
PINNED = {
    "speech.01": ("seen", "Is there any speech in this recording? Answer with one of: {options}."),
    "speech.02": ("unseen", "Does anyone speak in this clip? Choose from: {options}."),
    "sound.01": ("seen", "What kind of sound is this? Answer with one of: {options}."),
    "sound.02": ("unseen", "What type of audio is this recording? Choose from: {options}."),
}


@pytest.mark.parametrize("row, speech, sound", [
    (SPEECH, "yes", "speech"),
    (TONE, "no", "tone"),
    (ANIMAL, "no", "animal"),
    ({"id": "x", "transcript": "hello there", "meta": {}}, "yes", "speech"),  # a transcript means speech
    ({"id": "x", "transcript": "", "meta": {}}, None, None),  # unknown: not asked
    ({"id": "x", "transcript": None, "meta": {"speech": False}}, "no", None),  # no speech, kind unknown
    ({"id": "x", "meta": {"speech": False, "sound": "birdsong"}}, "no", None),  # a kind the options lack
])
def test_speech_and_sound_labels(row, speech, sound):
    assert TASKS["speech"].label(row) == speech and TASKS["sound"].label(row) == sound
    assert applicable("speech", row) == (speech is not None) and applicable("sound", row) == (sound is not None)
    if speech:
        assert TASKS["speech"].options(row) == ["yes", "no"]
    if sound:
        assert TASKS["sound"].options(row) == SOUND_KINDS and sound in SOUND_KINDS


def test_every_task_applies_to_speech_and_only_some_to_no_speech():
    assert {t for t in TASKS if applicable(t, SPEECH)} == set(TASKS)
    assert {t for t in TASKS if applicable(t, TONE)} == NON_SPEECH_TASKS
    assert {t for t in TASKS if applicable(t, ANIMAL)} == NON_SPEECH_TASKS - {"volume"}  # no bins: no volume
    assert TASKS["speaker_count"].label(TONE) == TASKS["speaker_count"].label(ANIMAL) == "0"
    assert TASKS["volume"].label(TONE) == "high" and TASKS["duration"].label(TONE) == "medium"
    # a stray speaker label on a row without speech is never asked about
    stray = dict(TONE, transcript="words", language="en", meta=dict(TONE["meta"], gender="male", accent="x"),
                 bins=dict(TONE["bins"], pitch="High", speed="Fast", noise="Low"))
    assert {t for t in TASKS if applicable(t, stray)} == NON_SPEECH_TASKS


@pytest.mark.parametrize("task", ["speech", "sound"])
def test_templates_cover_both_splits_and_kinds_and_render(task):
    ts = templates_for(task)
    assert len(ts) >= 10 and {t.split for t in ts} == {"seen", "unseen"} and {t.kind for t in ts} == {
        "plain", "constrained"}
    assert any(c["id"] == "one_word" for t in ts for c in t.constraints)
    for t in ts:
        for row in (SPEECH, TONE):
            text = render(t, row)
            assert ", ".join(TASKS[task].options(row)) in text and "{" not in text
        if t.kind == "plain":
            assert t.as_bare().text and "one of" not in t.as_bare().text.lower()


def test_new_template_ids_are_pinned():
    for tid, (split, text) in PINNED.items():
        t = get_template(tid)
        assert (t.split, t.text) == (split, text)
    assert [t.id for t in templates_for("speech")][:3] == ["speech.01", "speech.02", "speech.03"]


@pytest.mark.parametrize("answer, options, focus, picked", [
    ("No, there is no speech in this recording.", ["yes", "no"], TASKS["speech"].focus, "no"),
    ("Yes, someone is speaking.", ["yes", "no"], TASKS["speech"].focus, "yes"),
    ("It's a steady tone at 880 Hz.", SOUND_KINDS, TASKS["sound"].focus, "tone"),
    ("A sequence of beeps.", SOUND_KINDS, TASKS["sound"].focus, "tone"),
    ("It is silent.", SOUND_KINDS, TASKS["sound"].focus, "silence"),
    ("A woman is talking.", SOUND_KINDS, TASKS["sound"].focus, "speech"),
    ("No one is talking; it's music.", SOUND_KINDS, TASKS["sound"].focus, "music"),
    ('{"answer": "noise"}', SOUND_KINDS, TASKS["sound"].focus, "noise"),
])
def test_answers_map_onto_the_options(answer, options, focus, picked):
    assert parse_option(answer, options, focus) == picked
