"""Non-speech clips: synthesis (data_prep.nonspeech via data synth), attributes, descriptions."""

import json

import numpy as np
import pytest
import soundfile as sf

from data_prep import attributes as A
from data_prep import nonspeech, synth
from data_prep.config import AttributesConfig, DescribeConfig, ImportConfig, SynthConfig
from data_prep.describe import describe_row, run_describe
from data_prep.importers import run_import
from data_prep.synth import build_row, corpus_path, plan_clip, render_clip, synth_corpus
from speech_adapter.config import from_dict
from speech_adapter.errors import ConfigError

FIELDS = ["gender", "pitch", "speed", "volume", "accent", "duration", "noise", "language", "speakers"]
SPEAKER_WORDS = ("Gender", "Accent", "Pitch:", "Speaking speed", "speaker", "male", "female", "says")


def only(sound, **kw) -> SynthConfig:
    return SynthConfig(**{"out_dir": "x", "seed": 7, "nonspeech_fraction": 1.0, "nonspeech_sounds": [sound], **kw})


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def clip_row(cfg, i):
    """(row, audio) of clip i, rendered in memory."""
    p = plan_clip(cfg, i)
    x, clipped = render_clip(cfg, p)
    return build_row(cfg, p, len(x), clipped), x


def test_share_is_the_fraction_and_speech_plans_are_unchanged():
    cfg, plain = SynthConfig(out_dir="x", seed=2), SynthConfig(out_dir="x", seed=2, nonspeech_fraction=0.0)
    plans = [plan_clip(cfg, i) for i in range(1500)]
    share = sum(not p["meta"]["speech"] for p in plans) / len(plans)
    assert cfg.nonspeech_fraction == 0.1 and 0.08 <= share <= 0.12
    for i, p in enumerate(plans[:200]):
        if p["meta"]["speech"]:  # the speech clip at an index is the one a speech-only corpus has there
            assert p == plan_clip(plain, i) and p["transcript"]
    assert all(plan_clip(plain, i)["meta"]["speech"] is True for i in range(200))
    kinds = {p["meta"]["sound"] for p in plans if not p["meta"]["speech"]}
    assert kinds == set(cfg.nonspeech_sounds) == set(nonspeech.SOUNDS) - {"animal"}  # animals: opt-in


@pytest.mark.parametrize("sound", nonspeech.SOUNDS)
def test_each_sound_renders_deterministically_at_its_measured_level(sound):
    cfg = only(sound)
    for i in range(6):
        row, x = clip_row(cfg, i)
        again, y = clip_row(cfg, i)
        assert row == again and np.array_equal(x, y)
        m = row["meta"]
        assert row["transcript"] == "" and row["language"] is None
        assert m["speech"] is False and m["sound"] == sound and m["speakers"] == 0 and not m["clipped"]
        assert 1.5 <= row["duration"] <= 8.0 and x.dtype == np.float32
        assert float(np.max(np.abs(x))) <= nonspeech.PEAK + 1e-6
        assert m["level_db"] == pytest.approx(10 * np.log10(np.mean(x.astype(np.float64) ** 2)), abs=0.06)
        lo, hi = nonspeech.ROOM_TONE_DB if sound == "silence" else nonspeech.LEVEL_DB
        assert lo - 0.1 <= m["level_db"] <= hi + 0.1 or (sound == "music" and m["level_db"] < hi)
        if sound in ("noise", "silence"):
            assert m["noise_color"] in ("white", "pink", "brown")
        if sound == "tone":
            assert m["pattern"] in ("steady", "beeps") and m["waveform"] in ("sine", "square")
            assert all(110 <= f <= 3000 for f in m["tone_hz"])
        if sound == "music":
            assert m["music_style"] in nonspeech.MUSIC_STYLES and 70 <= m["tempo_bpm"] <= 160
        if sound == "animal":
            assert m["animal_style"] in nonspeech.ANIMAL_STYLES and 2 <= m["calls"] <= 5


def test_birdsong_sings_high_and_calls_cry_low():
    """Birdsong's energy lies in the chirp band; a call's fundamental in CALL_HZ, well below it."""
    cfg = only("animal")
    found = {}
    for i in range(40):
        row, x = clip_row(cfg, i)
        found.setdefault(row["meta"]["animal_style"], x.astype(np.float64))
        if len(found) == 2:
            break
    sr = cfg.sampling_rate

    def band_share(x, lo, hi):
        power = np.abs(np.fft.rfft(x)) ** 2
        hz = np.fft.rfftfreq(len(x), 1 / sr)
        return power[(hz >= lo) & (hz <= hi)].sum() / power.sum()

    assert band_share(found["birdsong"], *nonspeech.CHIRP_HZ) > 0.9
    power = np.abs(np.fft.rfft(found["call"])) ** 2
    strongest = np.fft.rfftfreq(len(found["call"]), 1 / sr)[np.argmax(power)]
    lo, hi = nonspeech.CALL_HZ
    assert 0.8 * lo <= strongest <= 1.2 * hi and band_share(found["call"], 100, 2000) > 0.8


def test_steady_tone_has_its_frequency():
    cfg = only("tone")
    row, x = next((r, x) for r, x in map(lambda i: clip_row(cfg, i), range(40))
                  if r["meta"]["pattern"] == "steady" and r["meta"]["waveform"] == "sine")
    spectrum = np.abs(np.fft.rfft(x))
    peak_hz = np.argmax(spectrum) * cfg.sampling_rate / len(x)
    assert peak_hz == pytest.approx(row["meta"]["tone_hz"][0], rel=0.01)


def test_corpus_is_deterministic_resumable_and_wavs_hold_the_level(tmp_path):
    kw = dict(num_clips=5, seed=4, nonspeech_fraction=1.0)
    a, b = SynthConfig(out_dir=str(tmp_path / "a"), **kw), SynthConfig(out_dir=str(tmp_path / "b"), **kw)
    synth_corpus(a, progress=False)
    path = corpus_path(b)
    synth_corpus(b, progress=False)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))  # killed after 2 rows
    res = synth_corpus(b, progress=False)
    assert res["skipped"] == 2 and res["written"] == 3
    ra, rb = rows_of(corpus_path(a)), rows_of(path)
    assert ra == rb and len(ra) == 5
    for row in ra:
        assert (tmp_path / "a" / row["audio"]).read_bytes() == (tmp_path / "b" / row["audio"]).read_bytes()
        x, sr = sf.read(str(tmp_path / "a" / row["audio"]), dtype="float64")
        assert sr == 16000 and row["duration"] == pytest.approx(len(x) / sr, abs=1e-4)
        assert 10 * np.log10(np.mean(x ** 2)) == pytest.approx(row["meta"]["level_db"], abs=0.2)


def test_a_corpus_made_before_nonspeech_clips_existed_does_not_get_them_on_resume(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path), num_clips=2, seed=1)
    synth._check_same_config(cfg)
    path = tmp_path / synth.CONFIG_NAME
    old = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("nonspeech")}
    path.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="nonspeech_fraction"):
        synth._check_same_config(cfg)
    synth._check_same_config(SynthConfig(out_dir=str(tmp_path), num_clips=2, seed=1, nonspeech_fraction=0.0))


@pytest.mark.parametrize("data, msg", [
    ({"nonspeech_fraction": 1.5}, "nonspeech_fraction"),
    ({"nonspeech_sounds": ["birdsong"]}, "nonspeech_sounds"),
    ({"nonspeech_sounds": []}, "nonspeech_sounds"),
])
def test_config_validation_names_the_key(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(SynthConfig, data)


@pytest.mark.parametrize("sound", nonspeech.SOUNDS)
def test_attributes_of_nonspeech_are_none_where_there_is_no_speaker(sound):
    row, x = clip_row(only(sound), 0)
    attrs = A.measure(x, "", speech=False)
    assert attrs["pitch_hz"] is None and attrs["rate_wps"] is None and attrs["rate_source"] == "none"
    assert attrs["loudness_dbfs"] == pytest.approx(row["meta"]["level_db"], abs=0.1)
    assert attrs["duration_s"] == pytest.approx(row["duration"]) and attrs["snr_db"] is not None
    bins = A.bins_for(attrs, None, speech=False)
    assert bins["pitch"] is None and bins["speed"] is None and bins["noise"] is None
    assert bins["volume"] == A.bin_value("volume", row["meta"]["level_db"]) and bins["duration"]


def test_attributes_and_describe_run_over_a_mixed_corpus(tmp_path):
    synth_corpus(SynthConfig(out_dir=str(tmp_path / "c"), num_clips=4, seed=1, nonspeech_fraction=1.0,
                             nonspeech_sounds=["silence", "tone"]), progress=False)
    corpus = tmp_path / "c" / "corpus.jsonl"
    speech = {"id": "sp", "audio": "sp.wav", "duration": 1.0, "transcript": "hello there", "language": "en",
              "meta": {"speech": True, "gender": "female", "speakers": 1}}
    t = np.arange(16000) / 16000
    sf.write(str(tmp_path / "c" / "sp.wav"), (0.2 * np.sin(2 * np.pi * 200 * t) * (t % 0.3 < 0.2)).astype(np.float32),
             16000)
    with open(corpus, "a") as f:
        f.write(json.dumps(speech) + "\n")
    res = A.run_attributes(AttributesConfig(input=str(corpus), output=str(tmp_path / "a.jsonl")), progress=False)
    assert res["written"] == 5 and not res["rejected"]  # near-silence is quiet, not digital silence
    rows = rows_of(tmp_path / "a.jsonl")
    for r in rows:
        if r["meta"]["speech"] is False:
            assert r["attributes"]["pitch_hz"] is None and r["bins"]["pitch"] is None
            assert r["bins"]["volume"] and r["bins"]["duration"]
    assert next(r for r in rows if r["id"] == "sp")["attributes"]["pitch_hz"] is not None

    def no_whisper(waves):
        raise AssertionError("a clip without speech was sent to Whisper")

    out = tmp_path / "d.jsonl"
    run_describe(DescribeConfig(input=str(tmp_path / "a.jsonl"), output=str(out), fields=FIELDS),
                 progress=False, transcriber=no_whisper)
    described = {r["id"]: r for r in rows_of(out)}
    for r in described.values():
        if r["meta"]["speech"] is False:
            assert r["description"].startswith("No speech. ")
            assert not any(w in r["description"] for w in SPEAKER_WORDS)
            assert r["description_fields"]["speech"] == "No" and r["transcript"] == ""
        else:
            assert "No speech" not in r["description"] and "hello there" in r["description"]


@pytest.mark.parametrize("meta, expected", [
    ({"sound": "tone", "pattern": "steady", "waveform": "sine", "tone_hz": [880.0], "level_db": -15.0},
     "No speech. A steady high-pitched tone at about 880 Hz, 3.2 seconds, very loud."),
    ({"sound": "noise", "noise_color": "pink", "level_db": -18.0},
     "No speech. Pink noise, a steady rushing sound, 3.2 seconds, loud."),
    ({"sound": "silence", "noise_color": "brown", "level_db": -65.0},
     "No speech. Near silence: only a faint room hiss, 3.2 seconds, very quiet."),
    ({"sound": "music", "music_style": "chords", "root_hz": 220.0, "mode": "minor", "tempo_bpm": 96,
      "level_db": -27.0},
     "No speech. A short piece of synthetic music: chords in A minor played one after another at about 96 beats "
     "per minute, 3.2 seconds, quiet."),
    ({"sound": "tone", "pattern": "beeps", "waveform": "square", "tone_hz": [220.0, 440.0], "level_db": -35.0},
     "No speech. A sequence of short beeps (buzzy square-wave tones) at 2 different pitches between about 220 "
     "and 440 Hz, 3.2 seconds, very quiet."),
    ({"sound": "animal", "animal_style": "birdsong", "calls": 3, "level_db": -27.0},
     "No speech. An animal: a bird singing, 3 phrases of short high chirps, 3.2 seconds, quiet."),
    ({"sound": "animal", "animal_style": "call", "calls": 2, "level_db": -18.0},
     "No speech. An animal call repeated 2 times: a harmonic cry like a bleat or a moo, 3.2 seconds, loud."),
    ({}, "No speech. A sound that is not speech, 3.2 seconds."),
])
def test_descriptions_say_no_speech_and_what_the_sound_is(meta, expected):
    row = {"id": "n", "duration": 3.2, "transcript": "", "meta": {"speech": False, "gender": "female", **meta}}
    assert describe_row(row, FIELDS) == expected  # even a stray gender label is never stated


def test_bins_volume_wins_over_the_synthetic_level():
    row = {"id": "n", "duration": 2.0, "transcript": "", "bins": {"volume": "Normal"},
           "meta": {"speech": False, "sound": "noise", "noise_color": "white", "level_db": -60.0}}
    assert describe_row(row, FIELDS) == "No speech. White noise, a steady hiss, 2 seconds, at a moderate volume."


def test_imported_rows_with_a_transcript_are_speech(tmp_path):
    t = np.arange(8000) / 16000
    for name in ("a", "b"):
        sf.write(str(tmp_path / f"{name}.wav"), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    (tmp_path / "labels.csv").write_text("id,audio,text\na,a.wav,hello there\nb,b.wav,\n")
    cfg = ImportConfig(source=str(tmp_path / "labels.csv"), out_dir=str(tmp_path / "out"), id_column="id",
                       text_column="text")
    run_import(cfg, progress=False)
    rows = {r["id"]: r for r in rows_of(tmp_path / "out" / "corpus.jsonl")}
    assert rows["a"]["meta"]["speech"] is True
    assert "speech" not in rows["b"]["meta"]  # no transcript: unknown, not "no speech"


# ---------------------------------------------------------------- distill: SSR on rows without speech

TONE_ROW = {"id": "n1", "audio": "wavs/n1.wav", "duration": 3.2, "transcript": "", "language": None,
            "bins": {"pitch": None, "speed": None, "volume": "High", "duration": "Medium", "noise": None},
            "meta": {"speech": False, "sound": "tone", "pattern": "steady", "waveform": "sine", "tone_hz": [880.0],
                     "speakers": 0, "level_db": -18.0, "source": "synthetic"}}
TONE_ROW["description"] = describe_row(TONE_ROW, FIELDS)


@pytest.mark.parametrize("template, answer, ok", [
    ("describe.01", "I hear a steady, high-pitched tone; there is no speech.", True),
    ("describe.01", "Just a loud beep, nothing else.", True),
    ("describe.01", "There is no one speaking in this clip.", True),
    ("describe.01", "A woman says hello in a calm voice.", False),
    ("describe.01", "I hear some audio.", False),  # neither "no speech" nor the sound
    ("speech.01", "No, there is no speech, only a tone.", True),
    ("speech.01", "Yes, someone is speaking.", False),
    ("sound.01", "It is a tone.", True),
    ("sound.01", "It is music.", False),
    ("speaker_count.01", "0", True),
])
def test_judge_on_a_clip_without_speech(tmp_path, template, answer, ok):
    reason = _judge(tmp_path, answer, template, TONE_ROW)
    assert (reason is None) == ok, reason


def _judge(tmp_path, answer: str, template: str, row: dict):
    """SSR's verdict on `answer` to `template` about `row` (None = kept)."""
    from data_prep.distill import DistillConfig, judge
    from speech_adapter.templates import get_template

    cfg = DistillConfig(input="in.jsonl", output=str(tmp_path / "out.jsonl"))
    return judge(answer, get_template(template), row, cfg)


@pytest.mark.parametrize("template, answer, ok", [
    ("describe.01", "A bird is chirping; nobody speaks.", True),
    ("describe.01", "I hear an animal call.", True),
    ("describe.01", "A man whistles a tune.", False),
    ("sound.01", "It is an animal.", True),
    ("sound.01", "It is music.", False),
])
def test_judge_on_an_animal_clip(tmp_path, template, answer, ok):
    row = {**TONE_ROW, "meta": {"speech": False, "sound": "animal", "animal_style": "birdsong", "calls": 3,
                                "speakers": 0, "level_db": -18.0, "source": "synthetic"}}
    row["description"] = describe_row(row, FIELDS)
    reason = _judge(tmp_path, answer, template, row)
    assert (reason is None) == ok, reason


def test_an_answer_denying_the_speech_of_a_speech_clip_is_rejected(tmp_path):
    from data_prep.distill import DistillConfig, judge
    from speech_adapter.templates import get_template

    row = {"id": "s", "transcript": "No speech was given that day.", "duration": 2.0, "description": "x",
           "meta": {"speech": True, "gender": "female", "speakers": 1}}
    cfg = DistillConfig(input="in.jsonl", output=str(tmp_path / "out.jsonl"))
    assert judge("A woman says: no speech was given that day.", get_template("describe.01"), row, cfg) is None
    assert "denies the speech" in judge("There is no speech, only a woman humming.", get_template("describe.01"),
                                        row, cfg)


def test_distill_plans_only_applicable_tasks_and_keeps_checked_answers(tmp_path):
    from data_prep.distill import DistillConfig, distill, plan_clip
    from data_prep.teacher import FakeTeacher

    cfg = DistillConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out" / "d.jsonl"), quiet=True,
                        templates_per_clip=6, constrained_fraction=0.0, attempts=2)
    planned = {t.task for i in range(20) for t in plan_clip(dict(TONE_ROW, id=f"n{i}"), cfg)}
    assert planned <= {"volume", "duration", "speaker_count", "describe", "speech", "sound"}
    assert {"speech", "sound", "describe"} <= planned
    fake = FakeTeacher({"rules": [{"contains": "yes, no", "answers": ["Yes.", "No, only a tone."]},
                                  {"contains": "silence, animal", "answers": ["It is a steady tone."]},
                                  {"contains": "Answer with a number", "answers": ["0"]},
                                  {"contains": "very low", "answers": ["High."]}],
                        "default": "No speech: a steady high-pitched tone."})
    cfg = DistillConfig(input=cfg.input, output=cfg.output, quiet=True, templates_per_clip=6,
                        constrained_fraction=0.0, attempts=2, tasks=["speech", "sound", "speaker_count", "volume"])
    distill([TONE_ROW], cfg, teacher=fake)
    rows = rows_of(tmp_path / "out" / "d.jsonl")
    by_task = {r["task"]: r["response"] for r in rows}
    assert by_task["speech"] == "No, only a tone." and by_task["sound"] == "It is a steady tone."
    assert by_task["describe"].startswith("No speech") and by_task["speaker_count"] == "0"
    prompt = next(c[0] for c in fake.calls)
    assert "No speech. A steady high-pitched tone at about 880 Hz" in prompt
