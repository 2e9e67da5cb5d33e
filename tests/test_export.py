"""speech_adapter.export + the checked loader: contents, round trip in a new process, peft
format, merged LoRA, and refusals (checksum, hidden size, chat template, paths outside)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speech_adapter.errors import ConfigError, ModelNotFoundError
from speech_adapter.export import ExportConfig, export
from speech_adapter.models.adapter_dir import find_source
from speech_adapter.inference.api import load
from tests.inference.export_fixtures import clip, make_run, perturbed_tiny, save_local_pair

MAX_EXPORT_BYTES = 1_000_000  # the tiny adapter + LoRA are ~100 kB; base models would be MBs


@pytest.fixture(scope="module")
def lora_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    model = perturbed_tiny(lora=True)
    run = make_run(model, root / "run")
    out = export(run, root / "out", ExportConfig(merge_lora=True), log=lambda s: None)
    return model, out


def test_export_holds_only_trained_tensors_and_a_card(lora_export):
    model, out = lora_export
    adapter = load_file(str(out / "adapter_model.safetensors"))
    # the adapter's parameters and its fitted feature statistics, nothing of the base models
    assert set(adapter) == {k for k, p in model.adapter.named_parameters()} | {k for k, _ in model.adapter.named_buffers()}
    lora = load_file(str(out / "lora" / "adapter_model.safetensors"))
    n_lora = sum(p.numel() for n, p in model.llm.named_parameters() if p.requires_grad)
    assert sum(v.numel() for v in lora.values()) == n_lora and all("lora_" in k for k in lora)
    small = [p for p in out.rglob("*") if p.is_file() and "merged_llm" not in p.parts]
    assert sum(p.stat().st_size for p in small) < MAX_EXPORT_BYTES
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_models"]["llm"]["ref"] == "tiny:llm" and len(cfg["base_models"]["llm"]["weights"]) == 1
    assert cfg["files"] == {"weights": "adapter_model.safetensors", "lora": "lora", "merged_llm": "merged_llm"}
    assert cfg["llm_hidden_size"] == 32 and cfg["placeholder"] == "<|AUDIO|>"
    assert "{instruction}" in cfg["prompt"]["user_template"]
    card = (out / "README.md").read_text()
    assert "50.0 %" in card and "75.0 %" in card and "distilled.jsonl" in card and "SpeechLM.from_pretrained" in card
    assert not list(out.glob(".*tmp"))  # the temp dir was renamed away


@pytest.mark.parametrize("which,expected", [
    ("auto", "adapter"), ("final", "adapter"), ("latest", "step-00004"), ("step-2", "step-00002"),
])
def test_find_source_picks_the_requested_weights(lora_export, which, expected):
    run = lora_export[1].parent / "run"
    assert find_source(run, which).name == expected


def test_find_source_refuses_unknown(lora_export, tmp_path):
    run = lora_export[1].parent / "run"
    with pytest.raises(ModelNotFoundError, match="step-7"):
        find_source(run, "step-7")
    with pytest.raises(ConfigError, match="--checkpoint"):
        find_source(run, "best")
    with pytest.raises(ModelNotFoundError, match="no adapter_config"):
        find_source(tmp_path, "auto")


def test_lora_dir_loads_with_peft_itself(lora_export):
    from peft import PeftModel

    from speech_adapter.models.tiny import tiny_llm

    model, out = lora_export
    peft_model = PeftModel.from_pretrained(tiny_llm()[0], str(out / "lora")).eval()
    ids = torch.tensor([[5, 17, 99, 3, 42]])
    with torch.no_grad():
        assert torch.allclose(peft_model(input_ids=ids).logits, model.llm(input_ids=ids).logits, atol=1e-6)
        assert not torch.allclose(tiny_llm()[0](input_ids=ids).logits, model.llm(input_ids=ids).logits)


def test_merged_llm_equals_lora_outputs(lora_export):
    from transformers import AutoModelForCausalLM

    model, out = lora_export
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged_llm")).eval()
    assert not any("lora" in k for k in merged.state_dict())
    ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, model.llm(input_ids=ids).logits, atol=1e-5)


CHILD = """
import json, sys, numpy as np
from speech_adapter.models.speechlm import SpeechLM
from tests.inference.export_fixtures import clip
m = SpeechLM.from_pretrained(sys.argv[1])
exs = [{"audio": clip(1.5, 0), "instruction": "What can you hear?", "system": "Be brief."},
       {"audio": clip(2.5, 1), "instruction": "Describe it."}]
print(json.dumps(m.generate(exs, max_new_tokens=12)))
"""


def test_same_generations_after_reload_in_a_new_process(lora_export):
    model, out = lora_export
    exs = [{"audio": clip(1.5, 0), "instruction": "What can you hear?", "system": "Be brief."},
           {"audio": clip(2.5, 1), "instruction": "Describe it."}]
    before = model.generate(exs, max_new_tokens=12)
    res = subprocess.run([sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(__file__).parents[1]), timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    after = json.loads(res.stdout.strip().splitlines()[-1])
    assert after == before and any(before)


@pytest.fixture()
def local_export(tmp_path):
    """An export whose base models are local dirs (so their files have checksums)."""
    from speech_adapter.models.speechlm import SpeechLM
    from speech_adapter.models.tiny import tiny_config

    w, l = save_local_pair(tmp_path / "base")
    cfg = tiny_config()
    cfg.encoder, cfg.llm = w, l
    torch.manual_seed(0)
    model = SpeechLM.build(cfg)
    model.save_adapter(tmp_path / "run" / "adapter")
    out = export(tmp_path / "run", tmp_path / "out", log=lambda s: None)
    return model, out, tmp_path / "base"


def test_local_base_models_round_trip(local_export):
    model, out, _ = local_export
    ex = [{"audio": clip(1.0, 2), "instruction": "hi"}]
    assert load(out).generate(ex, max_new_tokens=6) == model.generate(ex, max_new_tokens=6)


@pytest.mark.parametrize("change,match,ignorable", [
    ({"bump": 0.01}, "model.safetensors sha256", True),
    ({"chat_template": False}, "no chat template", False),
    ({"hidden": 48}, "llm_hidden_size 32 recorded, but .* has 48", False),
])
def test_mismatched_base_model_is_refused(local_export, change, match, ignorable):
    model, out, base = local_export
    save_local_pair(base, **change)
    with pytest.raises(ConfigError, match=match):
        load(out)
    if ignorable:
        m = load(out, ignore_mismatch=True)
        want = model.adapter.state_dict()
        assert all(torch.equal(v, want[k]) for k, v in m.adapter.state_dict().items())
    else:
        with pytest.raises(ConfigError, match="not ignorable"):
            load(out, ignore_mismatch=True)


@pytest.mark.parametrize("key,value", [("lora", "../x"), ("weights", "../w.safetensors"),
                                       ("weights", "/etc/passwd")])
def test_files_outside_the_export_are_refused(local_export, key, value):
    _, out, _ = local_export
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["files"][key] = value
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="outside the export dir"):
        load(out)


def test_export_cli_writes_and_prints(lora_export, tmp_path, capsys):
    from speech_adapter.cli import main

    run = lora_export[1].parent / "run"
    assert main(["export", str(run), str(tmp_path / "e"), "--checkpoint", "step-2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "e")
    assert "step-00002" in json.loads((tmp_path / "e" / "adapter_config.json").read_text())["exported_from"]
    assert main(["export", str(run), str(tmp_path / "f"), "--merge-lora", "--checkpoint", "nope"]) == 2
    assert not (tmp_path / "f").exists()


def test_remote_code_is_never_taken_from_the_file(local_export):
    _, out, _ = local_export
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["model"]["trust_remote_code"] = True
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    assert load(out).config.trust_remote_code is False
