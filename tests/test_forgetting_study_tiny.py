"""The forgetting study's shape on tiny random models and a scripted teacher: three variants (one
adapter-only, one with LoRA, one with LoRA + Magpie replay) train, evaluate and export from one
shared data set; text_retention runs only where LoRA moved the LLM; a rerun skips every finished
variant (train, eval, export); compare writes the learn-vs-forget table and both plots. The
shipped study recipe validates and passes `run --dry-run`."""

import json
from pathlib import Path

from speech_adapter.eval.learn_forget import LEARN_FORGET_PNG, LORA_RANK_PNG
from speech_adapter.pipeline import run_pipeline
from speech_adapter.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("task_sft", "self_distill_lora2", "task_sft_replay")
SCRIPT = {"rules": [
    {"contains": "Gender: Male", "answers": ["I hear a man speaking in a calm voice."]},
    {"contains": "Gender: Female", "answers": ["I hear a woman speaking in a calm voice."]},
    {"contains": "tips for sleeping", "answers": ["Keep a regular schedule and keep the room cool."]},
    {"contains": "sky is blue", "answers": ["Sunlight scatters off the air, and blue light the most."]},
    # Magpie's bare user-turn prefix: the instructions, in order
    {"contains": "<user>", "answers": ["Give me three tips for sleeping better at night.",
                                       "Explain why the sky is blue to a child."]},
], "default": "I hear a person speaking in a calm voice."}


def study_recipe(tmp_path) -> Path:
    script = tmp_path / "teacher.json"
    script.write_text(json.dumps(SCRIPT))
    text = f"""
name: tiny_study
output_dir: {tmp_path / 'run'}
data:
  source: synth
  synth: {{num_clips: 6, p_multi_speaker: 0.0, p_other_language: 0.0, rate_min: 150, nonspeech_fraction: 0.0}}
  heldout_fraction: 0.34
distill:
  model: fake:{script}
  describe_per_clip: 1
  templates_per_clip: 1
  tasks: [gender]
  constrained_fraction: 0.5
  attempts: 1
  open_min_grounding: 0.0
replay:
  magpie_candidates: 2
  magpie: {{model: "fake:{script}", quiet: true}}
model:
  encoder: tiny:whisper
  llm: tiny:llm
  adapter: {{kind: stack_mlp}}
train: {{objective: task_sft, max_steps: 2, batch_size: 2, save_every: 0}}
variants:
  - name: task_sft
  - name: self_distill_lora2
    train: {{objective: self_distill}}
    model: {{lora: {{rank: 2, alpha: 4}}}}
  - name: task_sft_replay
    train: {{text_mix: 0.3}}
    model: {{lora: {{rank: 2, alpha: 4}}}}
eval:
  suite: {{n_per_task: 1, tasks: [gender, describe], constrained_fraction: 0.5}}
  max_new_tokens: 4
  modes: [speech, text_ceiling, text_retention]
"""
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


def test_tiny_study_runs_skips_and_compares(tmp_path, capsys):
    path = study_recipe(tmp_path)
    recipe = load_recipe(path)
    run_pipeline(recipe)
    root = recipe.run_dir
    for name in VARIANTS:
        v = root / "variants" / name
        report = json.loads((v / "eval" / name / "report.json").read_text())
        lora = name != "task_sft"
        assert ("text_retention" in report["modes"]) == lora  # the untouched LLM equals the ceiling
        assert report["training"]["lora_rank"] == (2 if lora else 0)
        assert (v / "train" / "adapter" / "lora").is_dir() == lora
        assert (v / "export" / "adapter_model.safetensors").exists()
    train = json.loads((root / "variants" / "task_sft_replay" / "train" / "config.json").read_text())["train"]
    assert train["text_mix"] == 0.3 and train["text_file"].endswith("text_rows.jsonl")
    assert (root / "distill" / "text_rows.jsonl").read_text().count("\n") == 2

    out = root / "eval" / "compare"
    section = (out / "compare.md").read_text().split("## Learn vs forget")[1].split("\n## ")[0]
    names = [line.split(" | ")[0][2:] for line in section.splitlines()
             if line.startswith("| ") and not line.startswith("| system")]
    assert names == ["untrained", *VARIANTS]
    for png in (LEARN_FORGET_PNG, LORA_RANK_PNG):
        assert (out / png).stat().st_size > 5000

    capsys.readouterr()
    run_pipeline(load_recipe(path))
    err = capsys.readouterr().err
    assert "] running" not in err  # no stage reran
    for name in VARIANTS:
        for stage in ("train", "eval", "export"):
            assert f"[{stage}:{name}] already complete" in err


def test_shipped_study_recipe_dry_run(capsys):
    from speech_adapter.cli import main

    assert main(["run", str(ROOT / "recipes" / "forgetting_study.yaml"), "--dry-run"]) == 0
    recipe = load_recipe(ROOT / "recipes" / "forgetting_study.yaml")
    variants = {v.name: recipe.for_variant(v) for v in recipe.variants}
    steps = {r.train_config().max_steps for r in variants.values()}
    assert len(steps) == 1 and steps.pop() > 0  # every variant trains the same number of steps
    ranks = {n: (r.model.lora.rank if r.model.lora else 0) for n, r in variants.items()}
    for objective in ("task_sft", "self_distill"):
        assert sorted(ranks[n] for n, r in variants.items() if r.train_config().objective == objective
                      and not r.train_config().text_mix and not r.train_config().hard_token_filter) == [0, 4, 16, 64]
    assert {r.train_config().text_mix for r in variants.values()} >= {0.1, 0.3}
    assert any(r.train_config().hard_token_filter == 0.2 for r in variants.values())
    assert "kl_distill" in {r.train_config().objective for r in variants.values()}
    assert recipe.model.use_transcript and recipe.replay.magpie_candidates > 0
