"""Inference: ask/Conversation, long-audio chunks, multi-clip turns, the
chat command (one shot, REPL, bad audio) and `infer` (rejects, resume, strict)."""

import io
import json

import numpy as np
import pytest

from speech_adapter.audio import SAMPLE_RATE
from speech_adapter.errors import AudioError, DataError
from speech_adapter.inference.api import Conversation, audio_pieces, load
from speech_adapter.inference.batch import InferConfig, infer
from tests.inference.export_fixtures import clip, perturbed_tiny, write_wav

GEN = {"max_new_tokens": 6}
N_QUERIES = 4  # tiny qformer: fixed audio tokens per piece


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("inf")
    perturbed_tiny().save_adapter(root / "model")
    model = load(root / "model")
    wavs = [write_wav(root / f"c{i}.wav", 1.0 + 0.5 * i, seed=i) for i in range(3)]
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    return root, model, wavs


def test_long_audio_is_chunked_into_30s_pieces(exported):
    _, model, _ = exported
    long = clip(65.0, 4)
    pieces = audio_pieces(long)
    assert [len(p) / SAMPLE_RATE for p in pieces] == [30.0, 30.0, 5.0]
    assert len(audio_pieces(clip(60.05))) == 2  # a < 0.1 s tail is dropped
    conv = Conversation(model)
    conv.add_audio(long)
    assert isinstance(conv.ask("hi", **GEN), str)
    conv.turns.pop()  # keep the user turn, look at its prompt
    batch = conv._batch()
    assert batch["input_ids"].shape[1] > 3 * N_QUERIES and batch["input_features"].shape[0] == 3


def test_conversation_history_and_several_clips(exported):
    _, model, wavs = exported
    conv = Conversation(model, system=None)
    conv.add_audio(wavs[0])
    conv.add_audio(wavs[1])
    first = conv.ask("Compare them.", **GEN)
    conv.add_audio(wavs[2])
    conv.ask("And this one?", **GEN)
    assert [t["role"] for t in conv.turns] == ["user", "assistant", "user", "assistant"]
    assert conv.turns[1]["content"] == first and len(conv.turns[0]["clips"]) == 2
    text = conv.model.tokenizer.apply_chat_template(
        [{"role": "user", "content": model.processor.user_turn(conv.turns[0]["instruction"], conv.turns[0]["clips"])}], tokenize=False)
    assert text.count(model.config.placeholder) == 2
    conv.reset()
    assert conv.turns == [] and conv.pending == []


def test_bad_audio_names_the_file(exported):
    root, model, _ = exported
    with pytest.raises(AudioError, match="broken.wav"):
        Conversation(model).add_audio(root / "broken.wav")


def test_chat_one_shot_prints_the_streamed_reply(exported, capsys):
    from speech_adapter.cli import main

    root, model, wavs = exported
    rc = main(["chat", "--model", str(root / "model"), "--audio", str(wavs[0]), "--max-new-tokens", "6", "hi"])
    out = capsys.readouterr().out
    assert rc == 0 and out.strip() == model.ask(wavs[0], "hi", **GEN) and out.strip()
    rc = main(["chat", "--model", str(root / "model"), "--audio", str(root / "broken.wav"), "hi"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "broken.wav" in err


def test_repl_commands(exported):
    from speech_adapter.inference.chat import repl

    root, model, wavs = exported
    conv = Conversation(model)
    script = f"/audio {wavs[0]}\nhello\n/audio {root / 'missing.wav'}\n/bogus\nagain\n/reset\n/quit\nnever\n"
    out = io.StringIO()
    repl(conv, GEN, inp=io.StringIO(script), out=out)
    text = out.getvalue()
    assert f"(added {wavs[0]})" in text and "missing.wav: file not found" in text
    assert "unknown command /bogus" in text and "(history cleared)" in text
    assert conv.turns == []  # reset happened after two answered turns; 'never' came after /quit


def _rows(root, wavs):
    rows = [{"id": f"r{i}", "audio": w.name, "instruction": "What can you hear?"} for i, w in enumerate(wavs)]
    rows += [{"id": "bad", "audio": "broken.wav", "instruction": "x"}, {"id": "noinstr", "audio": "c0.wav"},
             {"id": "r0", "audio": "c0.wav", "instruction": "dup"}]
    path = root / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows[:3]) + "\n{not json\n"
                    + "\n".join(json.dumps(r) for r in rows[3:]) + "\n")
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_infer_rejects_and_resumes(exported, tmp_path):
    root, model, wavs = exported
    rows = _rows(root, wavs)
    full = tmp_path / "a" / "out.jsonl"
    counts = infer(model, rows, full, InferConfig(batch_size=2), GEN)
    assert counts == {"rows": 7, "skipped": 0, "answered": 3, "rejected": 4}
    got = {r["id"]: r["response"] for r in _read(full)}
    assert sorted(got) == ["r0", "r1", "r2"]
    reasons = {r["id"]: r["reason"] for r in _read(full.with_name("rejects.jsonl"))}
    assert "broken.wav" in reasons["bad"] and "instruction" in reasons["noinstr"]
    assert reasons["r0"] == "duplicate id" and "malformed JSONL" in reasons[None]
    # a killed run: one finished row and a torn second line
    part = tmp_path / "b" / "out.jsonl"
    part.parent.mkdir()
    part.write_text(full.read_text().splitlines()[0] + "\n" + '{"id": "r1", "resp')
    counts = infer(model, rows, part, InferConfig(batch_size=1), GEN)
    assert counts["skipped"] == 2 and counts["answered"] == 2  # r0 and its duplicate row
    assert {r["id"]: r["response"] for r in _read(part)} == got
    n_rejects = len(_read(part.with_name("rejects.jsonl")))
    again = infer(model, rows, part, InferConfig(batch_size=1), GEN)
    assert again["answered"] == 0 and again["rejected"] == 0
    assert len(_read(part.with_name("rejects.jsonl"))) == n_rejects


def test_infer_strict_stops(exported, tmp_path):
    root, model, wavs = exported
    with pytest.raises(DataError, match="malformed"):
        infer(model, _rows(root, wavs), tmp_path / "out.jsonl", InferConfig(strict=True), GEN)


def test_infer_long_clip_is_answered(exported, tmp_path):
    root, model, _ = exported
    write_wav(tmp_path / "long.wav", 31.0)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "L", "audio": "long.wav", "instruction": "hi"}) + "\n")
    assert infer(model, rows, tmp_path / "out.jsonl", gen=GEN)["answered"] == 1


def test_infer_cli(exported, tmp_path, capsys):
    from speech_adapter.cli import main

    root, _, wavs = exported
    args = ["infer", "--model", str(root / "model"), str(_rows(root, wavs)), "--max-new-tokens", "4"]
    assert main(args + [str(tmp_path / "o.jsonl"), "--batch-size", "2"]) == 0
    assert len(_read(tmp_path / "o.jsonl")) == 3 and "3 answered" in capsys.readouterr().err
    assert main(args + [str(tmp_path / "s.jsonl"), "--strict"]) == 2
    assert "rows.jsonl:4" in capsys.readouterr().err
