"""scripts/refit_voice_head.py: refit an adapter's voice gender head alone on labelled clips."""

import json

import pytest
import soundfile as sf
import torch

from speech_adapter.models.speechlm import SpeechLM
from tests.models.test_voice_features import tiny_voice_model, voice
from tests.scripts_import import load_script


def _write_clips(tmp_path, name, specs) -> str:
    lines = []
    for i, (hz, meta) in enumerate(specs):
        path = tmp_path / f"{name}{i}.wav"
        sf.write(path, voice(hz, 0.6, seed=i), 16000)
        lines.append(json.dumps({"id": f"{name}{i}", "audio": str(path), "meta": meta}))
    out = tmp_path / f"{name}.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return str(out)


def test_labels_and_inputs_leave_out_unknown_clips(tmp_path):
    mod = load_script("refit_voice_head")
    assert [mod.clip_voice({"meta": m}) for m in ({"gender": "Male"}, {"gender": "female"}, {"speech": False},
                                                  {"gender": "mixed"}, {})] == ["male", "female", "none", None, None]
    model = tiny_voice_model("stack_mlp", timbre=True, gender_loss=1.0).eval()
    _write_clips(tmp_path, "c", [(110, {"gender": "male"}), (150, {"gender": "mixed"}),
                                         (230, {"gender": "female"})])
    x, y = mod.head_inputs(model, tmp_path / "c.jsonl")
    assert y.tolist() == [0, 1] and x.shape == (2, model.adapter.voice.mlp[0].in_features)


def test_the_refit_head_learns_low_from_high_voices_and_is_saved(tmp_path):
    mod = load_script("refit_voice_head")
    model = tiny_voice_model("stack_mlp", timbre=True, gender_loss=1.0)
    model.save_adapter(tmp_path / "ad")
    low = [(hz, {"gender": "male"}) for hz in (100, 110, 120, 130)]
    high = [(hz, {"gender": "female"}) for hz in (210, 225, 240, 255)]
    _write_clips(tmp_path, "train", low + high)
    _write_clips(tmp_path, "held", [(105, {"gender": "male"}), (245, {"gender": "female"})])
    x, y = mod.head_inputs(model.eval(), tmp_path / "train.jsonl")
    voice = model.adapter.voice
    voice.timbre_dropout, voice.channel_dropout = 0.5, 0.9
    voice.gender.fit(x, y, epochs=60, seed=0, drop_timbre=voice.drop_timbre, lr=1e-2)
    xh, yh = mod.head_inputs(model, tmp_path / "held.jsonl")
    assert mod.accuracy(voice, voice.gender, xh, yh) == (2, 2)

    def refit(*args: str) -> int:
        return mod.main([str(tmp_path / "ad"), "--train-clips", str(tmp_path / "train.jsonl"),
                         "--heldout-clips", str(tmp_path / "held.jsonl"), *args])

    out = tmp_path / "refit"
    assert refit("--epochs", "3", "--out", str(out)) == 0
    again = SpeechLM.from_pretrained(out)
    before = SpeechLM.from_pretrained(tmp_path / "ad")
    first = lambda m: m.adapter.voice.gender.members[0][0].weight  # noqa: E731
    assert not torch.equal(first(again), first(before))
    torch.testing.assert_close(again.adapter.voice.mlp[0].weight, before.adapter.voice.mlp[0].weight)
    # --heads: a head of another size, saved with its count in the config and loaded as saved
    out3 = tmp_path / "refit3"
    assert refit("--epochs", "3", "--heads", "3", "--out", str(out3)) == 0
    three = SpeechLM.from_pretrained(out3)
    assert len(three.adapter.voice.gender.members) == 3 and three.config.adapter.voice_gender_heads == 3
    assert len(before.adapter.voice.gender.members) == len(model.adapter.voice.gender.members)
    torch.testing.assert_close(three.adapter.voice.mlp[0].weight, before.adapter.voice.mlp[0].weight)
    # --pitch-view: the verdict's weight on the pitch alone, saved into the config
    outv = tmp_path / "refit_view"
    assert refit("--epochs", "3", "--pitch-view", "0.5", "--out", str(outv)) == 0
    viewed = SpeechLM.from_pretrained(outv)
    assert viewed.config.adapter.voice_gender_pitch_view == 0.5 and viewed.adapter.voice.gender_pitch_view == 0.5
    assert before.adapter.voice.gender_pitch_view == 0.0
    # --epochs 0: the head as trained, only the pitch view set
    kept = tmp_path / "kept_view"
    assert refit("--epochs", "0", "--pitch-view", "0.25", "--out", str(kept)) == 0
    same = SpeechLM.from_pretrained(kept)
    assert same.adapter.voice.gender_pitch_view == 0.25
    torch.testing.assert_close(first(same), first(before))

    for bad in (["--pitch-view", "1.5"], ["--epochs", "-1"], ["--epochs", "0", "--heads", "3"]):
        with pytest.raises(SystemExit, match="--pitch-view|--epochs|--heads"):
            refit(*bad)

    # a head without a timbre: the view is refused, not saved into an adapter that would not load
    plain = tiny_voice_model("stack_mlp", timbre=False, gender_loss=1.0)
    plain.save_adapter(tmp_path / "plain")
    with pytest.raises(SystemExit, match="--pitch-view: .*needs the voice gender head on a timbre"):
        mod.main([str(tmp_path / "plain"), "--train-clips", str(tmp_path / "train.jsonl"), "--heldout-clips",
                  str(tmp_path / "held.jsonl"), "--epochs", "0", "--pitch-view", "0.5",
                  "--out", str(tmp_path / "plain_view")])
    assert not (tmp_path / "plain_view").exists()
