"""Atomic training checkpoints with exact resume (torchtune/peft-style: constant names, safetensors).

Layout of `run_dir/checkpoints/step-00012/` (written to a temp dir, renamed into place):

    adapter_model.safetensors, adapter_config.json  model.save_adapter(dir): a usable adapter dir
    training_state/trainable.safetensors            every trainable tensor (adapter + LoRA)
    training_state/optimizer.safetensors + .json    optimizer tensors / param groups and scalars
    training_state/scheduler.json                   LR scheduler state
    training_state/rng.json + rng.safetensors       python, numpy, torch RNG per process
    training_state/position.json                    {global_step, epoch, step_in_epoch}

No pickles: tensors go to safetensors, the rest to JSON. Loading refuses a checkpoint whose
weights are not safetensors (a `.bin`/`.pt` file could run code when unpickled).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from speech_adapter.errors import SpeechAdapterError
from speech_adapter.utils.io import atomic_path
from speech_adapter.utils.safety import load_safetensors

STATE = "training_state"
TRAINABLE = "trainable.safetensors"
_STEP_RE = re.compile(r"^step-(\d+)$")
_UNSAFE = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class CheckpointError(SpeechAdapterError):
    """A checkpoint that cannot be loaded; the message names the file."""


def step_dir(run_dir, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:05d}"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints of `run_dir`, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_RE.match(d.name)
        if m and (d / STATE / "position.json").exists():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(run_dir) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def prune_checkpoints(run_dir, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (0 keeps all); returns what was deleted."""
    ckpts = list_checkpoints(run_dir)
    if keep_last <= 0 or len(ckpts) <= keep_last:
        return []
    gone = [d for _, d in ckpts[:-keep_last]]
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


# ---- optimizer / RNG <-> (tensors, json) ---------------------------------------------------

def _split_optimizer(state: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict, torch.Tensor]:
    """(json-able python+numpy state, torch CPU state tensor) of this process."""
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return meta, torch.get_rng_state()


def set_rng_state(meta: dict, torch_state: torch.Tensor) -> None:
    v, internal, gauss = meta["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state)


# ---- save / load ------------------------------------------------------------------------------

def save_checkpoint(run_dir, step: int, model, optimizer, scheduler, position: dict,
                    rng_states: list[tuple[dict, torch.Tensor]], config: dict | None = None) -> Path:
    """Write checkpoint `step` atomically; `model` is the unwrapped SpeechLM-like module.

    `rng_states`: one (meta, torch_state) per process, indexed by rank.
    """
    final = step_dir(run_dir, step)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        if hasattr(model, "save_adapter"):
            model.save_adapter(tmp)
        st = tmp / STATE
        st.mkdir()
        trainable = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
        save_file(trainable, str(st / TRAINABLE))
        tensors, meta = _split_optimizer(optimizer.state_dict())
        save_file(tensors, str(st / "optimizer.safetensors"))
        (st / "optimizer.json").write_text(json.dumps(meta))
        (st / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
        save_file({f"rank{r}": t for r, (_, t) in enumerate(rng_states)}, str(st / "rng.safetensors"))
        (st / "rng.json").write_text(json.dumps([m for m, _ in rng_states]))
        if config is not None:
            (st / "train_config.json").write_text(json.dumps(config, indent=2))
        (st / "position.json").write_text(json.dumps(dict(position, global_step=step)))
    return final


def _check_safe(ckpt: Path) -> None:
    st = ckpt / STATE
    unsafe = sorted(p.name for p in list(ckpt.glob("*")) + list(st.glob("*")) if p.suffix in _UNSAFE)
    if unsafe:
        raise CheckpointError(f"{ckpt}: refusing pickled weights {unsafe}; only safetensors are loaded")
    for name in (TRAINABLE, "optimizer.safetensors", "rng.safetensors"):
        if not (st / name).is_file():
            raise CheckpointError(f"{st / name}: missing; the checkpoint is incomplete")


def load_trainable(model, ckpt) -> None:
    """Load a checkpoint's trainable tensors into `model` (unwrapped); every key must match."""
    ckpt = Path(ckpt)
    _check_safe(ckpt)
    sd = load_safetensors(ckpt / STATE / TRAINABLE)
    expected = set(model.trainable_state_dict())
    if set(sd) != expected:
        extra, missing = sorted(set(sd) - expected)[:3], sorted(expected - set(sd))[:3]
        raise CheckpointError(f"{ckpt / STATE / TRAINABLE}: tensors do not match the model "
                              f"(unexpected {extra}, missing {missing}); was it trained with another config?")
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for k, v in sd.items():
            target = params.get(k, buffers.get(k))
            if target is None:
                raise CheckpointError(f"{ckpt}: '{k}' is not a parameter or buffer of the model")
            target.copy_(v)


def load_checkpoint(ckpt, model, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore model trainables, optimizer, scheduler and this rank's RNG; returns the position."""
    ckpt = Path(ckpt)
    load_trainable(model, ckpt)
    st = ckpt / STATE
    meta = json.loads((st / "optimizer.json").read_text())
    optimizer.load_state_dict(_join_optimizer(load_safetensors(st / "optimizer.safetensors"), meta))
    scheduler.load_state_dict(json.loads((st / "scheduler.json").read_text()))
    metas = json.loads((st / "rng.json").read_text())
    states = load_safetensors(st / "rng.safetensors")
    r = rank if f"rank{rank}" in states else 0  # a different world size: reuse rank 0's stream
    set_rng_state(metas[r], states[f"rank{r}"])
    return json.loads((st / "position.json").read_text())


def save_final_adapter(run_dir, model) -> Path:
    """run_dir/adapter/ via model.save_adapter, atomically."""
    out = Path(run_dir) / "adapter"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        model.save_adapter(tmp)
    return out


__all__ = ["save_checkpoint", "load_checkpoint", "load_trainable", "latest_checkpoint",
           "list_checkpoints", "prune_checkpoints", "save_final_adapter", "CheckpointError"]
