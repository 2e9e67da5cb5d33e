"""data_prep.teacher_ct2: the CTranslate2 backend answers and scores like the transformers one.

A tiny random Llama saved to tmp_path is converted by CTranslate2's own converter; greedy
answers must equal `transformers` generate's, option scores its summed log-probabilities.
"""

import pytest

from data_prep.teacher import Sampling, TeacherConfig, TransformersTeacher

from data_prep.teachers import load_teacher
from speech_adapter.errors import ConfigError

pytest.importorskip("ctranslate2")

PROMPTS = [[{"role": "user", "content": "What can you hear?"}],
           [{"role": "user", "content": "Describe the voice in one word, please."}],
           [{"role": "user", "content": "Hi"}]]


@pytest.fixture
def tiny_dir(tmp_path, monkeypatch):
    from speech_adapter.models.tiny import tiny_llm

    monkeypatch.setenv("SPEECH_ADAPTER_HOME", str(tmp_path / "home"))
    model, tok = tiny_llm(hidden=64)
    d = tmp_path / "tiny-llm"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d, model, tok


def test_greedy_answers_and_scores_match_transformers(tiny_dir):
    d, model, tok = tiny_dir
    ct = load_teacher(TeacherConfig(model=str(d), backend="ctranslate2", batch_size=2))
    hf = TransformersTeacher(model, tok, "tiny", batch_size=2)
    sampling = Sampling(max_new_tokens=12)
    got, want = ct.generate(PROMPTS, sampling=sampling), hf.generate(PROMPTS, sampling=sampling)
    assert got == want and any(a[0] for a in got)
    replies = [["Female.", "Male."], ["yes"], ["a b c", "x"]]
    s_ct, s_hf = ct.score(PROMPTS, replies), hf.score(PROMPTS, replies)
    for a, b in zip(s_ct, s_hf):
        assert a == pytest.approx(b, abs=1e-3)
        assert all(v < 0 for v in a)


def test_conversion_is_cached_and_sampling_is_seeded_like_transformers(tiny_dir):
    from data_prep.teacher_ct2 import ct2_model_dir

    d, model, tok = tiny_dir
    out = ct2_model_dir(d)
    stamp = (out / "model.bin").stat().st_mtime_ns
    assert ct2_model_dir(d) == out and (out / "model.bin").stat().st_mtime_ns == stamp  # not redone
    ct = load_teacher(TeacherConfig(model=str(d), backend="ctranslate2"))
    sampling = Sampling(do_sample=True, temperature=1.0, max_new_tokens=10, seed=3)
    a = ct.generate(PROMPTS[:2], n=2, sampling=sampling, seeds=[5, 6])
    assert a == ct.generate(PROMPTS[:2], n=2, sampling=sampling, seeds=[5, 6])
    assert a == TransformersTeacher(model, tok, "tiny").generate(PROMPTS[:2], n=2, sampling=sampling, seeds=[5, 6])
    assert len(a) == 2 and all(len(r) == 2 for r in a)


@pytest.mark.parametrize("kw, message", [
    ({"backend": "ctranslate2", "dtype": "int4"}, "dtype"),
    ({"backend": "transformers", "dtype": "int8"}, "dtype"),
    ({"backend": "ctranslate2", "model": "x.gguf"}, "not a .gguf"),
])
def test_bad_ctranslate2_settings_are_clear_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        cfg = TeacherConfig(**kw)
        cfg.validate()
        load_teacher(cfg)
