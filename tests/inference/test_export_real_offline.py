"""Export + load + chat on the real offline defaults (Whisper tiny.en + SmolLM2-135M) with an
untrained adapter: the export is small, records source.json checksums, reloads to the same
greedy generations, and `chat` answers. Slow (loads both base models twice)."""

import json
import time

import pytest
import torch

from speech_adapter.paths import OFFLINE_LLM, OFFLINE_WHISPER, offline_model_dir

pytestmark = pytest.mark.slow
OVERHEAD_BYTES = 100_000  # config, card, safetensors header: everything but the fp32 adapter tensors


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    import librosa
    import soundfile as sf

    from data_prep.espeak import synthesize

    wav, sr = synthesize("The quick brown fox jumps over the lazy dog.", voice="en-us")
    path = tmp_path_factory.mktemp("wav") / "fox.wav"
    sf.write(str(path), librosa.resample(wav, orig_sr=sr, target_sr=16000), 16000)
    return path


def test_real_export_load_chat(tmp_path, speech_wav, capsys):
    from speech_adapter.models.speechlm import SpeechLM
    from speech_adapter.cli import main
    from speech_adapter.export import export
    from speech_adapter.models.config import ModelConfig

    torch.manual_seed(0)
    model = SpeechLM.build(ModelConfig())
    model.save_adapter(tmp_path / "run" / "adapter")
    out = export(tmp_path / "run", tmp_path / "out", log=lambda s: None)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    n_params = sum(p.numel() for p in model.adapter.parameters())
    assert 4 * n_params <= size < 4 * n_params + OVERHEAD_BYTES  # only the adapter, no base weights
    mb = size / 1e6
    cfg = json.loads((out / "adapter_config.json").read_text())
    src = json.loads((offline_model_dir(OFFLINE_LLM) / "source.json").read_text())
    assert cfg["base_models"]["llm"]["weights"]["model.safetensors"] == src["outputs"]["model.safetensors"]["sha256"]
    assert cfg["base_models"]["encoder"]["ref"] == OFFLINE_WHISPER

    t0 = time.perf_counter()
    loaded = SpeechLM.from_pretrained(out)
    load_s = time.perf_counter() - t0
    want = model.ask(speech_wav, "What can you hear?", max_new_tokens=8)
    assert loaded.ask(speech_wav, "What can you hear?", max_new_tokens=8) == want and want

    rc = main(["chat", "--model", str(out), "--audio", str(speech_wav), "--max-new-tokens", "8",
               "What can you hear?"])
    assert rc == 0 and capsys.readouterr().out.strip() == want
    print(f"\nexport {mb:.2f} MB, load {load_s:.1f} s")
