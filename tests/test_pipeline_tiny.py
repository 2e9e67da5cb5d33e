"""The whole pipeline on tiny random models and a scripted teacher: every stage runs, writes its
outputs, and a rerun skips every finished stage (seconds, no real weights)."""

import json

import pytest

from speech_adapter.pipeline import run_pipeline
from speech_adapter.recipe import load_recipe

SCRIPT = {"rules": [
    {"contains": "Gender: Male", "answers": ["I hear a man speaking in a calm voice."]},
    {"contains": "Gender: Female", "answers": ["I hear a woman speaking in a calm voice."]},
], "default": "I hear a person speaking in a calm voice."}


@pytest.fixture
def recipe_path(tmp_path):
    script = tmp_path / "teacher.json"
    script.write_text(json.dumps(SCRIPT))
    text = f"""
name: tiny
output_dir: {tmp_path / 'run'}
seed: 0
data:
  source: synth
  synth: {{num_clips: 6, p_multi_speaker: 0.0, p_other_language: 0.0, rate_min: 150}}
  heldout_fraction: 0.34
distill:
  model: fake:{script}
  describe_per_clip: 1
  templates_per_clip: 0
  attempts: 1
  open_min_grounding: 0.0
model:
  encoder: tiny:whisper
  llm: tiny:llm
  adapter: {{kind: stack_mlp}}
train:
  max_steps: 3
  batch_size: 2
  save_every: 0
eval:
  suite: {{n_per_task: 1, tasks: [gender, describe]}}
  max_new_tokens: 4
  modes: [speech, text_ceiling]
"""
    p = tmp_path / "tiny.yaml"
    p.write_text(text)
    return p


def test_tiny_pipeline_end_to_end_then_skips(recipe_path, capsys):
    recipe = load_recipe(recipe_path)
    results = run_pipeline(recipe)
    p = recipe.paths()
    assert results["split"] == {"train_clips": 4, "heldout_clips": 2}
    assert results["transcribe"]["transcribed"] == 6
    assert all(isinstance(json.loads(x).get("asr_transcript"), str)
               for x in p["train_clips"].read_text().splitlines())
    distilled = [json.loads(x) for x in p["distilled"].read_text().splitlines()]
    assert distilled and all(r["split"] == "seen" and r["response"] for r in distilled)
    assert (p["train"] / "adapter" / "adapter_config.json").exists()
    for system in ("untrained", "trained"):
        report = json.loads((p["eval"] / system / "report.json").read_text())
        assert "speech" in report["modes"]
    assert (p["compare"] / "compare.md").exists()
    assert (p["export"] / "adapter_model.safetensors").exists() and results["export"]["export_mb"] < 5
    capsys.readouterr()
    again = run_pipeline(load_recipe(recipe_path))
    err = capsys.readouterr().err
    assert "[train] already complete" in err and "[distill] already complete" in err
    assert again["split"] == results["split"]


def test_a_changed_recipe_trains_again_instead_of_resuming_the_old_run(recipe_path, capsys):
    """The train stage reruns when its recipe section changes; its old checkpoints must not be
    resumed (a finished run would end at once with the old weights), and the untrained adapter
    is built again when the model section changes."""
    import torch
    from safetensors.torch import load_file

    run_pipeline(load_recipe(recipe_path), until="train")
    p = load_recipe(recipe_path).paths()
    before = load_file(p["train"] / "adapter" / "adapter_model.safetensors")
    recipe_path.write_text(recipe_path.read_text().replace("  max_steps: 3", "  max_steps: 3\n  lr: 3.0e-2"))
    capsys.readouterr()
    run_pipeline(load_recipe(recipe_path), until="train")
    out = capsys.readouterr()
    assert "training starts over" in out.out + out.err
    after = load_file(p["train"] / "adapter" / "adapter_model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((p["train"] / "config.json").read_text())["train"]["lr"] == 3.0e-2


def test_a_setting_added_since_a_run_resumes_it_while_it_holds_its_default(tmp_path):
    """A finished run's config.json written before a field existed (here `voice_features`, and a
    train field) must not make the upgraded pipeline train again; the same field set to another
    value, or a changed value, starts over."""
    from speech_adapter.config import to_dict
    from speech_adapter.models.config import ModelConfig
    from speech_adapter.pipeline import _start_over_if_changed
    from speech_adapter.train.config import TrainConfig

    model, train = to_dict(ModelConfig(use_transcript=True)), to_dict(TrainConfig(lr=1e-3))
    defaults = {"model": to_dict(ModelConfig()), "train": to_dict(TrainConfig())}
    old = {"model": {k: v for k, v in model.items() if k != "voice_features"},
           "train": {k: v for k, v in train.items() if k != "keep_last"}, "train_file_sha256": "abc"}

    def run(now: dict) -> bool:  # True: the checkpoints were kept
        (tmp_path / "checkpoints").mkdir(exist_ok=True)
        (tmp_path / "config.json").write_text(json.dumps(old))
        _start_over_if_changed(tmp_path, now, defaults)
        return (tmp_path / "checkpoints").exists()

    settings = {"model": model, "train": train, "train_file_sha256": "abc"}
    assert run(settings)
    assert not run({**settings, "model": {**model, "voice_features": True}})
    assert not run({**settings, "train": {**train, "lr": 2e-3}})
    assert not run({**settings, "train_file_sha256": "def"})
    adapter = {**model["adapter"], "kind": "stack_mlp"}
    assert not run({**settings, "model": {**model, "adapter": adapter}})
