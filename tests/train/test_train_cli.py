"""tests for speech_adapter/train/cli.py: `speech-adapter train RECIPE.yaml` on the tiny models."""

import json

import yaml

from speech_adapter.cli import main
from tests.train.train_fixtures import write_rows


def _recipe(tmp_path, **train):
    data = write_rows(tmp_path / "data", 6)
    text = write_rows(tmp_path / "data", 0, name="text.jsonl", text_rows=4)
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump({
        "name": "tiny", "output_dir": str(tmp_path / "out"), "seed": 1,
        "model": {"encoder": "tiny:whisper", "llm": "tiny:llm", "lora": {"rank": 2, "alpha": 4.0},
                  "adapter": {"kind": "stack_mlp", "stack_factor": 4, "mlp_hidden": 32}},
        "train": {"text_mix": 0.25, "batch_size": 2,
                  "objective": "kl_distill", "ce_weight": 0.5, "hard_token_filter": 0.2,
                  "cache_encoder": True, "max_steps": 3, "log_every": 1, **train},
        "eval": {"max_new_tokens": 8},
    }))
    return p, ["--train-file", str(data), "--text-file", str(text)]


def test_train_cli_runs_kl_distill_with_replay_cache_and_lora(tmp_path, capsys):
    recipe, files = _recipe(tmp_path)
    assert main(["train", str(recipe), "train.lr=0.001", *files]) == 0
    run = tmp_path / "out" / "train"
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["lr"] == 0.001 and saved["model"]["lora"]["rank"] == 2
    assert (run / "adapter" / "adapter_model.safetensors").exists() and (run / "adapter" / "lora").is_dir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["loss"] == r["loss"] for r in rows)  # finite, not NaN
    assert list((run / "feature_cache").glob("*/*.safetensors"))


def test_train_cli_reports_bad_key_without_work(tmp_path, capsys):
    recipe, files = _recipe(tmp_path)
    assert main(["train", str(recipe), "train.learning_rat=1", *files]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.learning_rat'" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_train_cli_defaults_to_the_pipelines_rows_and_names_the_command(tmp_path, capsys):
    recipe, _ = _recipe(tmp_path, text_mix=0.0)
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "distill/distilled.jsonl not found" in err and f"speech-adapter run {recipe} --until replay" in err
    assert not (tmp_path / "out").exists()


def test_train_cli_refuses_voice_only_rows_without_voice_features_before_a_step(tmp_path, capsys):
    recipe, files = _recipe(tmp_path)
    assert main(["train", str(recipe), "train.voice_only_tasks=[gender]", *files]) == 2
    assert "model.voice_features" in capsys.readouterr().err
    assert not (tmp_path / "out" / "train" / "metrics.jsonl").exists()
