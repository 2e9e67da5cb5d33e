"""tests for speech_adapter/train/loop.py, checkpoint.py and feature_cache.py on the tiny SpeechLM."""

import pytest
import torch

from speech_adapter.models.tiny import tiny_speechlm
from speech_adapter.train import checkpoint as ckpt
from speech_adapter.train.config import TrainConfig
from speech_adapter.train.data import Rejects, load_train_data
from speech_adapter.train.loop import Trainer
from speech_adapter.train.objectives import compute_loss
from tests.train.train_fixtures import write_rows


def make_trainer(tmp_path, n_rows=8, **cfg):
    path = write_rows(tmp_path / "data", n_rows)
    cfg = TrainConfig(train_file=path, **{"batch_size": 2, "max_steps": 4, "save_every": 0,
                                          "log_every": 1, **cfg})
    data = load_train_data(cfg, Rejects(tmp_path / "rejects.jsonl"))
    trainer = Trainer(tiny_speechlm(), cfg, tmp_path / "run", data,
                      encoder_config={"encoder": "tiny:whisper"})
    trainer.setup()
    return trainer


def _spy_grads(trainer):
    grads = []
    step = trainer.optimizer.step

    def spy(*a, **k):
        grads.append([p.grad.clone() for p in trainer.core.parameters() if p.requires_grad])
        return step(*a, **k)

    trainer.optimizer.step = spy
    return grads


def test_grad_accumulation_matches_big_batch(tmp_path):
    """accum 2 x batch 2 gives the gradient of batch 4 (rows with equal response lengths)."""
    grads = {}
    for name, bs, accum in (("big", 4, 1), ("accum", 2, 2)):
        tr = make_trainer(tmp_path / name, batch_size=bs, grad_accum=accum, max_grad_norm=0.0)
        spy = _spy_grads(tr)
        rows = [tr.data.load([i]) for i in (0, 3, 6, 7)]
        examples = [ex for _, exs, _ in rows for ex in exs]
        for ex in examples:
            ex["response"] = "same length"
        ids = [i for i, _, _ in rows]
        micro = [(sum(ids[k:k + bs], []), examples[k:k + bs], False) for k in range(0, 4, bs)]
        tr.train_step(micro)
        grads[name] = spy[0]
        tr.cleanup()
    for a, b in zip(grads["big"], grads["accum"]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_keep_last_and_metrics(tmp_path):
    tr = make_trainer(tmp_path, max_steps=6, save_every=1, keep_last=2)
    assert tr.train() == "done"
    tr.cleanup()
    steps = [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")]
    assert steps == [5, 6]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and '"tokens_per_s"' in lines[0]


def test_checkpoint_refuses_pickled_weights(tmp_path):
    tr = make_trainer(tmp_path, max_steps=1, save_every=1)
    tr.train()
    tr.cleanup()
    d = ckpt.latest_checkpoint(tmp_path / "run")
    model = tiny_speechlm(seed=5)
    ckpt.load_trainable(model, d)  # safetensors: loads
    assert all(torch.equal(model.trainable_state_dict()[k], v)
               for k, v in tr.core.trainable_state_dict().items())
    (d / "training_state" / "trainable.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ckpt.CheckpointError, match="refusing pickled weights"):
        ckpt.load_trainable(model, d)
    (d / "training_state" / "trainable.bin").unlink()
    (d / "training_state" / "trainable.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.load_trainable(model, d)


def test_feature_cache_gives_same_loss(tmp_path):
    from speech_adapter.train.feature_cache import FeatureCache

    tr = make_trainer(tmp_path, n_rows=4)
    ids, examples, _ = tr.data.load([0, 1, 2, 3])  # clips of 0.3..0.6 s: padding inside the batch
    model, cfg = tr.core, tr.cfg
    cache = FeatureCache(tmp_path / "cache", {"encoder": "tiny"})
    plain, _ = compute_loss(model, examples, cfg)
    first, _ = compute_loss(model, examples, cfg, encode=lambda b: cache.encode(model, ids, b))
    assert cache.misses == 4 and cache.hits == 0
    model.encode_audio = None  # the second pass must not touch the encoder
    again, _ = compute_loss(model, examples[::-1], cfg, encode=lambda b: cache.encode(model, ids[::-1], b))
    assert cache.hits == 4
    assert torch.allclose(plain, first, atol=1e-6)
    del model.encode_audio
    plain_rev, _ = compute_loss(model, examples[::-1], cfg)
    assert torch.allclose(again, plain_rev, atol=1e-6)
    tr.cleanup()


def test_sigint_checkpoints_then_resume_finishes(tmp_path):
    import os
    import signal

    tr = make_trainer(tmp_path, max_steps=4)
    step = tr.train_step

    def step_then_ctrl_c(micro):
        out = step(micro)
        if tr.global_step == 1:  # during step 2
            os.kill(os.getpid(), signal.SIGINT)
        return out

    tr.train_step = step_then_ctrl_c
    assert tr.train() == "interrupted"
    tr.cleanup()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]
    assert not (tmp_path / "run" / "adapter").exists()
    again = make_trainer(tmp_path, max_steps=4)
    assert again.global_step == 2 and again.train() == "done"
    again.cleanup()
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()


def test_dev_loss_and_eval_hook(tmp_path):
    dev = write_rows(tmp_path / "dev", 4, name="dev.jsonl", seed=1)
    calls = []
    path = write_rows(tmp_path / "data", 8)
    cfg = TrainConfig(train_file=path, dev_file=dev, batch_size=2, max_steps=2, eval_every=1,
                      eval_batches=1, save_every=0, log_every=100)
    tr = Trainer(tiny_speechlm(), cfg, tmp_path / "run", load_train_data(cfg, Rejects(None)),
                 load_train_data(TrainConfig(train_file=dev, batch_size=2), Rejects(None)),
                 eval_hook=lambda t, s: calls.append(s) or {"hook": 1.0})
    tr.setup()
    tr.train()
    tr.cleanup()
    assert calls == [1, 2]
    import json
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["dev_loss"] > 0 and r["hook"] == 1.0 for r in rows)


def test_resume_refuses_changed_data_settings(tmp_path):
    from speech_adapter.errors import ConfigError

    tr = make_trainer(tmp_path, max_steps=1, save_every=1)
    tr.train()
    tr.cleanup()
    with pytest.raises(ConfigError, match=r"batch_size: 2 -> 4"):
        make_trainer(tmp_path, max_steps=2, batch_size=4)


def test_bf16_autocast_step_runs(tmp_path):
    tr = make_trainer(tmp_path, max_steps=1, precision="bf16")
    assert tr.train() == "done"
    tr.cleanup()
    import json
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < row["loss"] < 20


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                        (False, False, "fp32")])
def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_bf16(monkeypatch, avx512_bf16, amx, expected):
    from speech_adapter.train import loop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert loop.resolve_precision("auto") == expected
    assert loop.resolve_precision("fp32") == "fp32" and loop.resolve_precision("bf16") == "bf16"


def test_auto_precision_trains_in_what_it_resolves_to(tmp_path, monkeypatch, capsys):
    from speech_adapter.train import loop

    monkeypatch.setattr(loop, "native_bf16", lambda: True)
    tr = make_trainer(tmp_path, max_steps=1, precision="auto")
    assert tr.acc.mixed_precision == "bf16"
    assert tr.train() == "done"
    tr.cleanup()
    assert "precision auto: bf16 on this CPU" in capsys.readouterr().out


def test_dataloader_workers_give_the_same_step(tmp_path):
    """Loading + collating in a worker process changes nothing about the training."""
    weights = []
    for workers in (0, 1):
        torch.manual_seed(0)
        tr = make_trainer(tmp_path / f"w{workers}", max_steps=2, num_workers=workers)
        assert tr.train() == "done"
        tr.cleanup()
        weights.append(tr.core.trainable_state_dict())
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])


def _run(tmp_path, name, steps, stop_at=None):
    """Train the tiny model with adapter dropout to `steps`, optionally in two sessions."""
    path = write_rows(tmp_path / "data", 6)
    cfg = TrainConfig(train_file=path, batch_size=2, max_steps=steps, save_every=1, lr=1e-3, warmup_steps=1)
    for limit in ([stop_at] if stop_at else []) + [steps]:
        torch.manual_seed(0)
        tr = Trainer(tiny_speechlm(dropout=0.3), cfg, tmp_path / name,
                     load_train_data(cfg, Rejects(None)))
        tr.setup()
        tr.total_steps = limit  # stop early as a killed run would (checkpoint at every step)
        tr.train()
        tr.cleanup()
    return tr.core.trainable_state_dict()


def test_in_process_resume_is_exact_and_needs_the_rng_state(tmp_path, monkeypatch):
    straight = _run(tmp_path, "straight", 5)
    resumed = _run(tmp_path, "resumed", 5, stop_at=2)  # crosses an epoch boundary (3 steps/epoch)
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-6, rtol=0) for k in straight)
    # negative control: without restoring the RNG streams (adapter dropout) the runs diverge
    monkeypatch.setattr(ckpt, "set_rng_state", lambda *a: None)
    broken = _run(tmp_path, "broken", 5, stop_at=2)
    assert not all(torch.allclose(straight[k], broken[k], atol=1e-6, rtol=0) for k in straight)


def test_trainer_fits_feature_statistics_once_and_resume_restores_them(tmp_path):
    """A fresh run fits the adapter's feature statistics on the training clips before step 1; the
    checkpoint carries them, and a resumed run loads them instead of refitting."""
    tr = make_trainer(tmp_path, max_steps=2, save_every=1, feature_norm_clips=5)
    norm = tr.core.adapter.feature_norm
    fitted_mean, fitted_std = norm.mean.clone(), norm.std.clone()
    assert not torch.equal(fitted_mean, torch.zeros_like(fitted_mean))  # fitted, not the identity
    assert not torch.equal(fitted_std, torch.ones_like(fitted_std))
    tr.train()
    tr.cleanup()
    assert torch.equal(norm.mean, fitted_mean)  # statistics are not trained
    cfg = TrainConfig(train_file=tmp_path / "data" / "train.jsonl", batch_size=2, max_steps=2,
                      save_every=1, feature_norm_clips=1)  # a refit on 1 clip would differ
    again = Trainer(tiny_speechlm(), cfg, tmp_path / "run", load_train_data(cfg, Rejects(None)))
    again.setup()
    try:
        assert again.global_step == 2
        torch.testing.assert_close(again.core.adapter.feature_norm.mean, fitted_mean, atol=0, rtol=0)
        torch.testing.assert_close(again.core.adapter.feature_norm.std, fitted_std, atol=0, rtol=0)
    finally:
        again.cleanup()


def test_feature_norm_clips_zero_leaves_the_identity(tmp_path):
    tr = make_trainer(tmp_path, feature_norm_clips=0)
    try:
        assert torch.equal(tr.core.adapter.feature_norm.mean, torch.zeros_like(tr.core.adapter.feature_norm.mean))
    finally:
        tr.cleanup()
