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
        "train": {"train_file": str(data), "text_file": str(text), "text_mix": 0.25, "batch_size": 2,
                  "objective": "kl_distill", "ce_weight": 0.5, "hard_token_filter": 0.2,
                  "cache_encoder": True, "max_steps": 3, "log_every": 1, **train},
        "eval": {"anything": "is another stage's business"},
    }))
    return p


def test_train_cli_runs_kl_distill_with_replay_cache_and_lora(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    assert main(["train", str(recipe), "train.lr=0.001"]) == 0
    run = tmp_path / "out" / "train"
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["lr"] == 0.001 and saved["model"]["lora"]["rank"] == 2
    assert (run / "adapter" / "adapter.safetensors").exists() and (run / "adapter" / "lora").is_dir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["loss"] == r["loss"] for r in rows)  # finite, not NaN
    assert list((run / "feature_cache").glob("*/*.safetensors"))


def test_train_cli_reports_bad_key_without_work(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    assert main(["train", str(recipe), "train.learning_rat=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.learning_rat'" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
