"""Safe loading: safetensors only, no pickles, no remote code unless asked, exports stay in their dir.

The source scan is the guard against regressions anywhere in the tree; the other tests plant a
pickle (or a path outside) where each loader looks and check the refusal names the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from speech_adapter.errors import SpeechAdapterError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("speech_adapter", "data_prep", "benchmarks") for p in (ROOT / d).rglob("*.py")]

# pattern -> why it is banned (a call is allowed when `allow` is in the same call's text)
BANNED = {
    r"\btorch\.load\(": ("weights_only=True", "torch.load without weights_only=True can unpickle code"),
    r"trust_remote_code\s*=\s*True": (None, "remote code must come from the user's flag, never hard-coded"),
    r"\bpickle\.loads?\(": (None, "pickle can run code"),
    r"use_safetensors\s*=\s*False": (None, "weights only from safetensors"),
    r"allow_pickle\s*=\s*True": (None, "numpy pickles can run code"),
    r"\bdill\.|\bjoblib\.load\(": (None, "pickle-based loaders"),
}


def _call_text(src: str, start: int) -> str:
    """The text of the call opening at `start` (up to its matching parenthesis)."""
    depth, i = 0, src.index("(", start)
    for j in range(i, len(src)):
        depth += {"(": 1, ")": -1}.get(src[j], 0)
        if depth == 0:
            return src[start:j + 1]
    return src[start:]


def test_source_tree_has_no_unsafe_loading():
    assert len(SOURCES) > 40, "the scan found too few files; is ROOT right?"
    bad = []
    for path in SOURCES:
        src = path.read_text(encoding="utf-8")
        for pattern, (allow, why) in BANNED.items():
            for m in re.finditer(pattern, src):
                line = src.count("\n", 0, m.start()) + 1
                if src[src.rfind("\n", 0, m.start()) + 1:m.start()].lstrip().startswith("#"):
                    continue
                if allow and "(" in m.group(0) and allow in _call_text(src, m.start()):
                    continue
                bad.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)} ({why})")
    assert not bad, "\n".join(bad)


def test_scan_catches_a_planted_unsafe_call(tmp_path):
    """The scan itself works: the same rules flag a planted torch.load and a hard-coded flag."""
    src = "x = torch.load(f)\ny = torch.load(f, weights_only=True)\nm = f(trust_remote_code=True)\n"
    hits = [m.group(0) for p, (allow, _) in BANNED.items() for m in re.finditer(p, src)
            if not (allow and allow in _call_text(src, m.start()))]
    assert hits == ["torch.load(", "trust_remote_code=True"]


# ---- pickled weights are refused wherever weights are loaded


def _pickle(path: Path, tensors: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, str(path))


def test_base_llm_dir_with_only_pickled_weights_is_refused(tmp_path):
    from speech_adapter.models.loading import load_llm
    from speech_adapter.models.tiny import tiny_llm

    llm, tok = tiny_llm()
    llm.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    assert load_llm(str(tmp_path / "llm"))[0].config.hidden_size == llm.config.hidden_size  # control
    (tmp_path / "llm" / "model.safetensors").unlink()
    _pickle(tmp_path / "llm" / "pytorch_model.bin", llm.state_dict())
    with pytest.raises(SpeechAdapterError, match=r"refusing pickled LLM weights \['pytorch_model.bin'\]"):
        load_llm(str(tmp_path / "llm"))


def test_whisper_dir_with_only_pickled_weights_is_refused(tmp_path):
    from speech_adapter.models.loading import load_whisper
    from speech_adapter.models.tiny import tiny_whisper

    w, fe, wt = tiny_whisper()
    for obj in (w, fe, wt):
        obj.save_pretrained(tmp_path / "w")
    (tmp_path / "w" / "model.safetensors").unlink()
    _pickle(tmp_path / "w" / "pytorch_model.bin", w.state_dict())
    with pytest.raises(SpeechAdapterError, match="refusing pickled Whisper weights"):
        load_whisper(str(tmp_path / "w"))


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    from speech_adapter.models.tiny import tiny_speechlm

    d = tmp_path_factory.mktemp("a") / "adapter"
    m = tiny_speechlm()
    m.save_adapter(d)
    return m, d


def test_adapter_dir_with_pickled_weights_is_refused(tiny_adapter, tmp_path):
    import shutil

    from speech_adapter.models.speechlm import SpeechLM

    model, d = tiny_adapter
    bad = tmp_path / "adapter"
    shutil.copytree(d, bad)
    (bad / "adapter_model.safetensors").unlink()
    _pickle(bad / "adapter.bin", model.trainable_state_dict())
    with pytest.raises(SpeechAdapterError, match="refusing pickled adapter weights"):
        model.load_adapter(bad)
    with pytest.raises(SpeechAdapterError, match="pickled"):
        SpeechLM.from_pretrained(bad)


def test_training_checkpoint_with_pickles_is_refused(tiny_adapter, tmp_path):
    from speech_adapter.train.checkpoint import load_trainable

    model, _ = tiny_adapter
    ckpt = tmp_path / "checkpoints" / "step-00001"
    _pickle(ckpt / "training_state" / "trainable.pt", model.trainable_state_dict())
    with pytest.raises(SpeechAdapterError, match=r"refusing pickled weights \['trainable.pt'\]"):
        load_trainable(model, ckpt)


def test_corrupt_safetensors_is_a_clear_error(tiny_adapter, tmp_path):
    import shutil

    model, d = tiny_adapter
    bad = tmp_path / "adapter"
    shutil.copytree(d, bad)
    data = (bad / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(Exception) as e:
        model.load_adapter(bad)
    assert "adapter_model.safetensors" in str(e.value) or isinstance(e.value, SpeechAdapterError), repr(e.value)


# ---- exports stay inside their own dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from speech_adapter.export import ExportConfig, export
    from tests.inference.export_fixtures import make_run, perturbed_tiny

    root = tmp_path_factory.mktemp("exp")
    run = make_run(perturbed_tiny(lora=True), root / "run")
    return export(run, root / "out", ExportConfig(), log=lambda s: None)


def _copy_export(exported, tmp_path) -> Path:
    import shutil

    out = tmp_path / "export"
    shutil.copytree(exported, out, symlinks=True)
    return out


@pytest.mark.parametrize("planted", ["weights_symlink_out", "lora_symlink_out", "config_abs_path",
                                     "config_dotdot", "config_lora_dotdot"])
def test_export_pointing_outside_its_dir_is_refused(exported, tmp_path, planted):
    from speech_adapter.inference.api import load

    out = _copy_export(exported, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    weights = cfg.get("files", {}).get("weights", "adapter_model.safetensors")
    if planted == "weights_symlink_out":
        (outside / "w.safetensors").write_bytes((out / weights).read_bytes())
        (out / weights).unlink()
        (out / weights).symlink_to(outside / "w.safetensors")
    elif planted == "lora_symlink_out":
        import shutil

        shutil.move(str(out / "lora"), str(outside / "lora"))
        (out / "lora").symlink_to(outside / "lora", target_is_directory=True)
    else:
        key, value = {"config_abs_path": ("weights", str(outside / "w.safetensors")),
                      "config_dotdot": ("weights", "../elsewhere/w.safetensors"),
                      "config_lora_dotdot": ("lora", "../elsewhere/lora")}[planted]
        cfg.setdefault("files", {})[key] = value
        cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SpeechAdapterError, match="outside"):
        load(out)


def test_export_loads_when_untouched(exported, tmp_path):
    """The control: the same export, unmodified, loads."""
    from speech_adapter.inference.api import load

    assert load(_copy_export(exported, tmp_path)).config.lora is not None


def test_remote_code_needs_the_users_flag(exported, tmp_path, monkeypatch):
    """trust_remote_code written into an export's config is ignored; only the caller's flag counts."""
    from speech_adapter.inference import api
    from speech_adapter.models import speechlm

    out = _copy_export(exported, tmp_path)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["model"]["trust_remote_code"] = True
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    seen = []

    def fake_build(config):
        seen.append(config.trust_remote_code)
        raise RuntimeError("stop after build")

    monkeypatch.setattr(speechlm.SpeechLM, "build", staticmethod(fake_build))
    for flag in (False, True):
        with pytest.raises(RuntimeError, match="stop after build"):
            api.load(out, trust_remote_code=flag)
    assert seen == [False, True]


def test_corrupt_checkpoint_names_the_file(tiny_adapter, tmp_path):
    from safetensors.torch import save_file

    from speech_adapter.train.checkpoint import load_trainable

    model, _ = tiny_adapter
    st = tmp_path / "step-00001" / "training_state"
    st.mkdir(parents=True)
    save_file(model.trainable_state_dict(), str(st / "trainable.safetensors"))
    for name in ("optimizer.safetensors", "rng.safetensors"):
        (st / name).write_bytes(b"")
    load_trainable(model, st.parent)  # control: a whole file loads
    data = (st / "trainable.safetensors").read_bytes()
    (st / "trainable.safetensors").write_bytes(data[:100])
    with pytest.raises(SpeechAdapterError, match="trainable.safetensors: not a readable safetensors file"):
        load_trainable(model, st.parent)


@pytest.mark.parametrize("damage", ["pickled", "truncated"])
def test_export_with_bad_weights_names_the_file(exported, tmp_path, damage):
    from speech_adapter.inference.api import load

    out = _copy_export(exported, tmp_path)
    weights = next(out.glob("*.safetensors"))
    data = weights.read_bytes()
    if damage == "pickled":
        weights.unlink()
        _pickle(out / "adapter.bin", {"x": torch.zeros(2)})
        match = r"refusing pickled adapter weights \['adapter.bin'\]"
    else:
        weights.write_bytes(data[:64])
        match = f"{weights.name}: not a readable safetensors file"
    with pytest.raises(SpeechAdapterError, match=match):
        load(out)


def test_base_model_mismatch_is_one_line(tmp_path):
    """The checked loader lists every mismatch, on one line (the CLI prints errors as one line)."""
    from speech_adapter.export import export
    from speech_adapter.inference.api import load
    from speech_adapter.models.speechlm import SpeechLM
    from speech_adapter.models.tiny import tiny_config
    from tests.inference.export_fixtures import save_local_pair

    w, l = save_local_pair(tmp_path / "base")
    cfg = tiny_config()
    cfg.encoder, cfg.llm = w, l
    SpeechLM.build(cfg).save_adapter(tmp_path / "run" / "adapter")
    out = export(tmp_path / "run", tmp_path / "out", log=lambda s: None)
    save_local_pair(tmp_path / "base", bump=0.01, chat_template=False)
    with pytest.raises(SpeechAdapterError) as e:
        load(out)
    assert "\n" not in str(e.value) and "chat template" in str(e.value), str(e.value)
