"""The training loop: one readable class on `accelerate` (torchtune's setup/train/cleanup shape).

AdamW over the trainable parameters only (adapter, optional LoRA; the encoder and LLM stay
frozen, as in DeSTA2/Ultravox), cosine schedule with warmup, gradient accumulation, clipping,
fp32 or bf16 autocast, metrics to metrics.jsonl (and TensorBoard when installed), a periodic dev
loss, atomic checkpoints with keep-last-K, Ctrl-C saves then exits, and exact resume from the
latest checkpoint. Distribution is accelerate's (`accelerate launch`): each process takes every
world-th micro-batch of the same deterministic epoch order, so the data position is shared.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from speech_adapter.config import to_dict
from speech_adapter.errors import ConfigError
from speech_adapter.train import checkpoint as ckpt
from speech_adapter.train.data import Rejects, TrainData, load_train_data, read_rows
from speech_adapter.train.feature_cache import FeatureCache
from speech_adapter.train.objectives import compute_loss, require_voice_features
from speech_adapter.utils.io import JsonlAppender

def _identity(x):
    return x


def _worker_init(_):
    # Ctrl-C reaches the whole process group: workers ignore it, the main process checkpoints
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def param_groups(model, cfg) -> list[dict]:
    """The trainable parameters as AdamW groups: the LLM's LoRA weights in a group of their own
    at `cfg.lora_lr` when it is set, everything else (the adapter) at `cfg.lr`."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("model has no trainable parameters")
    if cfg.lora_lr is None:
        return [{"params": [p for _, p in named]}]
    lora = [p for n, p in named if "lora_" in n]
    if not lora:
        raise ConfigError("train.lora_lr: the model has no LoRA weights (set model.lora, or lora_lr: null)")
    rest = [p for n, p in named if "lora_" not in n]
    return [g for g in ({"params": rest}, {"params": lora, "lr": cfg.lora_lr}) if g["params"]]



def native_bf16() -> bool:
    """Does this machine multiply bf16 in hardware: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX tiles? (Elsewhere torch emulates bf16 matmuls, slower than fp32.)"""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str) -> str:
    """`train.precision` as run: "auto" becomes "bf16" on native-bf16 hardware, else "fp32"."""
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision

class _MicroBatches(torch.utils.data.Dataset):
    """This rank's micro-batches (row indices) → (ids, examples, text_only, collated batch).

    Audio decoding and the collate (log-mels, tokenization) run here, so DataLoader workers
    overlap them with the step.
    """

    def __init__(self, data, batches, collate):
        self.data, self.batches, self.collate = data, batches, collate

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        ids, examples, text_only = self.data.load(self.batches[i])
        return ids, examples, text_only, self.collate(examples, mode="audio") if examples else None


class Trainer:
    """Train `model` (a SpeechLM, or anything with its collate/forward/trainable API) on `data`.

    `eval_hook(trainer, step) -> dict` runs every `cfg.eval_every` steps after the dev loss,
    on the main process; its numbers are logged with the metrics.
    """

    def __init__(self, model, cfg, run_dir, data, dev_data=None,
                 eval_hook: Callable | None = None, encoder_config: dict | None = None):
        self.model, self.cfg, self.run_dir = model, cfg, Path(run_dir)
        self.data, self.dev_data, self.eval_hook = data, dev_data, eval_hook
        self.encoder_config = encoder_config
        self.global_step, self.epoch, self.step_in_epoch = 0, 0, 0
        self._stop = False
        self._finished = False  # train() returned on every rank (its last barrier passed)
        self._old_sigint = None
        self.metrics_file = self.tb = self.cache = None

    # ---- setup ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Accelerator, optimizer, schedule, feature cache, logging; resume if a checkpoint exists."""
        try:
            self._setup()
        except BaseException:
            _reset_accelerate()  # a failed setup must not pin this process's accelerate state
            raise

    def _setup(self) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from accelerate.utils import DistributedType, set_seed
        from transformers import get_cosine_schedule_with_warmup

        cfg = self.cfg
        precision = resolve_precision(cfg.precision)
        self.acc = Accelerator(
            # no CUDA: run on the CPU, and under torchrun join a gloo group (accelerate's MULTI_CPU)
            cpu=not torch.cuda.is_available(),
            mixed_precision="bf16" if precision == "bf16" else "no",
            # text-only micro-batches leave the adapter unused
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        set_seed(cfg.seed, device_specific=True)
        if self.acc.distributed_type == DistributedType.DEEPSPEED and cfg.grad_accum > 1:
            raise ConfigError("train.grad_accum: DeepSpeed steps inside backward(); use grad_accum=1 "
                              "and set gradient_accumulation_steps in the DeepSpeed config instead")
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        if cfg.precision == "auto":
            self.acc.print(f"precision auto: {precision} on this "
                           f"{'GPU' if torch.cuda.is_available() else 'CPU'}")

        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr, betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        self.steps_per_epoch = len(self.data.epoch_batches(0)) // (cfg.grad_accum * self.world)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train: {len(self.data)} rows make no full optimizer step of "
                              f"batch_size={cfg.batch_size} x grad_accum={cfg.grad_accum} x "
                              f"{self.world} processes; lower them or add rows")
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        warmup = cfg.warmup_steps or int(cfg.warmup_ratio * self.total_steps)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        self.model, self.optimizer = self.acc.prepare(self.model, self.optimizer)
        self.core = self.acc.unwrap_model(self.model)

        if cfg.voice_only_tasks:
            require_voice_features(self.core)
        if cfg.cache_encoder:
            cache_cfg = dict(self.encoder_config or {"encoder": "unknown"})
            if getattr(self.core.encoder, "voice", False):  # the pitch channels: other states, another cache
                cache_cfg["voice"] = True
            self.cache = FeatureCache(cfg.cache_dir or self.run_dir / "feature_cache", cache_cfg)

        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is not None:
            self._check_resumable(latest)
            pos = ckpt.load_checkpoint(latest, self.core, self.optimizer, self.scheduler, self.rank)
            self.global_step, self.epoch, self.step_in_epoch = (
                pos["global_step"], pos["epoch"], pos["step_in_epoch"])
            self.acc.print(f"resumed from {latest} (step {self.global_step})")
        else:
            self._fit_feature_norm()

        if self.acc.is_main_process:
            self.metrics_file = JsonlAppender(self.run_dir / "metrics.jsonl")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                self.tb = None
        self._old_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _distinct_clips(self, keep=None, limit: int = 0) -> list[int]:
        """Row indices of the first row of each distinct clip, in file order (the same on every
        rank), whose row `keep` accepts; at most `limit` (0 = all)."""
        picks, seen = [], set()
        for i, row in enumerate(self.data.rows):
            if row["audio"] is not None and row["audio"] not in seen and (keep is None or keep(row)):
                seen.add(row["audio"])
                picks.append(i)
            if limit and len(picks) == limit:
                break
        return picks

    def _clip_states(self, picks: list[int]):
        """(examples, (states, lengths)) for each batch of the rows `picks`: the frozen encoder's
        states, from the feature cache when there is one."""
        for b in range(0, len(picks), self.cfg.batch_size):
            ids, examples, _ = self.data.load(picks[b:b + self.cfg.batch_size])
            if examples:
                batch = self.core.processor.collate(examples, mode="audio")
                encode = self._encode_fn(ids, examples)
                yield examples, (encode(batch) if encode is not None else self.core.encode_audio(batch))

    def _fit_feature_norm(self) -> None:
        """Fit the adapter's feature statistics on the first `feature_norm_clips` distinct clips
        (file order, the same on every rank, so ranks agree without communicating)."""
        cfg = self.cfg
        if cfg.feature_norm_clips == 0 or not hasattr(self.core, "fit_feature_norm"):
            return
        picks = self._distinct_clips(limit=cfg.feature_norm_clips)
        if picks:
            frames = self.core.fit_feature_norm(states for _, states in self._clip_states(picks))
            if frames is not None:
                self.acc.print(f"adapter feature statistics fitted on {len(picks)} clips ({frames} frames)")

    def _fit_voice_head(self) -> None:
        """Refit the voice gender head alone after the last step (adapter.voice_gender_fit_epochs):
        its inputs (pitch statistics, timbre) come from the frozen encoder and the fitted feature
        statistics only, so it can be fitted on them directly, once per distinct labelled clip
        (the row's `gender`, train.data.clip_voice), with the seed of the run; a resume after the
        last checkpoint fits the same head again."""
        voice = getattr(getattr(self.core, "adapter", None), "voice", None)
        acfg = getattr(getattr(self.core, "config", None), "adapter", None)
        if voice is None or voice.gender is None or acfg is None or not acfg.voice_gender_fit_epochs:
            return
        picks = self._distinct_clips(keep=lambda row: row.get("gender") in voice.GENDERS)
        if not picks:
            self.acc.print("voice gender head: no labelled training clip; the jointly trained head is kept")
            return
        xs, ys = [], []
        batches = tqdm(self._clip_states(picks), total=-(-len(picks) // self.cfg.batch_size),
                       desc="voice gender head: clips", disable=not self.acc.is_local_main_process,
                       dynamic_ncols=True)
        for examples, states in batches:  # the inputs as inference reads them; the fit adds the dropout
            xs.append(self.core.voice_inputs(encoder_states=states).float())
            ys += [voice.GENDERS.index(ex["gender"]) for ex in examples]
        if not xs:
            self.acc.print("voice gender head: no labelled training clip loaded; the jointly trained head is kept")
            return
        x = torch.cat(xs)  # on the model's device, as the head
        y = torch.tensor(ys, device=x.device)
        voice.gender.fit(x, y, acfg.voice_gender_fit_epochs, seed=self.cfg.seed, drop_timbre=voice.drop_timbre,
                         progress=self.acc.is_local_main_process)
        with torch.no_grad():
            right = int((voice.gender_probabilities(x).argmax(-1) == y).sum())
        counts = {g: int((y == i).sum()) for i, g in enumerate(voice.GENDERS)}
        self.acc.print(f"voice gender head: {len(voice.gender.members)} heads x {acfg.voice_gender_fit_epochs} "
                       f"passes over {len(y)} clips {counts}; right on {right} of them")
        self._log({"step": self.global_step, "voice_head_clips": len(y),
                   "voice_head_train_accuracy": right / len(y)})

    # settings that fix the data order: a resume with other values would not continue the run
    RESUME_KEYS = ("batch_size", "grad_accum", "seed", "length_bucketing", "bucket_size", "text_mix",
                   "train_file", "text_file", "objective")

    def _check_resumable(self, latest: Path) -> None:
        import json

        saved_path = latest / ckpt.STATE / "train_config.json"
        saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
        now = to_dict(self.cfg)
        pos = json.loads((latest / ckpt.STATE / "position.json").read_text())
        diff = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in self.RESUME_KEYS if k in saved and saved[k] != now[k]]
        if pos.get("world", self.world) != self.world:
            diff.append(f"processes: {pos['world']} -> {self.world}")
        if diff:
            raise ConfigError(f"{self.run_dir}: its checkpoints come from other settings ({'; '.join(diff)}); "
                              "resume with the same settings or use a new run dir")

    def _on_sigint(self, signum, frame):
        self._stop = True  # finish the current step, checkpoint, exit

    # ---- one step ------------------------------------------------------------------------
    def _encode_fn(self, ids: list[str], examples: list[dict]):
        if self.cache is None:
            return None
        clip_ids = [i for i, ex in zip(ids, examples) if ex["audio"] is not None]
        return lambda batch: self.cache.encode(self.core, clip_ids, batch)

    def _micro_loss(self, ids, examples, text_only, batch=None):
        if not examples:  # every clip of this micro-batch went bad: a zero loss keeps ranks in step
            return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0, {}
        with self.acc.autocast():
            return compute_loss(self.model, examples, self.cfg, text_only=text_only,
                                encode=self._encode_fn(ids, examples), core=self.core, batch=batch)

    def train_step(self, micro_batches) -> dict:
        """One optimizer step over `grad_accum` micro-batches, each (ids, examples, text_only[,
        collated batch]); returns its metrics."""
        self.model.train()
        accum = len(micro_batches)
        loss_sum, stats_sum = 0.0, {"tokens": 0, "seq_tokens": 0}
        for m, (ids, examples, text_only, *batch) in enumerate(micro_batches):
            sync = m == accum - 1
            ctx = self.acc.no_sync(self.model) if not sync else contextlib.nullcontext()
            with ctx:
                loss, stats = self._micro_loss(ids, examples, text_only, *batch)
                self.acc.backward(loss / accum)
            loss_sum += float(loss.detach()) / accum
            for k in ("tokens", "seq_tokens"):
                stats_sum[k] += stats.get(k, 0)
            if "voice_gender" in stats:  # the auxiliary gender loss, weighted, mean over micro-batches
                stats_sum["voice_gender"] = stats_sum.get("voice_gender", 0.0) + stats["voice_gender"] / accum
        grad_norm = None
        if self.cfg.max_grad_norm > 0:
            # all of model.parameters(): accelerate then routes FSDP to its sharded clipping;
            # frozen params have no grad and are skipped
            grad_norm = float(self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss_sum, "grad_norm": grad_norm, **stats_sum}

    # ---- dev loss ------------------------------------------------------------------------
    @torch.no_grad()
    def dev_loss(self) -> float | None:
        """Mean loss over the first `eval_batches` micro-batches of dev_data (fixed order)."""
        if self.dev_data is None:
            return None
        self.model.eval()
        losses = []
        for idx in self.dev_data.epoch_batches(0)[: self.cfg.eval_batches]:
            ids, examples, text_only = self.dev_data.load(idx)
            if examples:
                with self.acc.autocast():
                    loss, _ = compute_loss(self.core, examples, self.cfg, text_only=text_only)
                losses.append(float(loss))
        self.model.train()
        return sum(losses) / len(losses) if losses else None

    # ---- the loop ------------------------------------------------------------------------
    def _epoch_loader(self, epoch: int, start_step: int):
        cfg = self.cfg
        per_step = cfg.grad_accum * self.world
        batches = self.data.epoch_batches(epoch)[: self.steps_per_epoch * per_step]
        mine = [batches[(s * cfg.grad_accum + m) * self.world + self.rank]
                for s in range(start_step, self.steps_per_epoch) for m in range(cfg.grad_accum)]
        # its own generator: building the loader must not draw from the global torch RNG
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        return torch.utils.data.DataLoader(
            _MicroBatches(self.data, mine, self.core.processor.collate), batch_size=None,
            num_workers=cfg.num_workers, collate_fn=_identity, generator=gen,
            worker_init_fn=_worker_init if cfg.num_workers else None)

    def train(self) -> str:
        """Run until `total_steps`; returns "done" or "interrupted" (checkpoint saved)."""
        cfg = self.cfg
        bar = tqdm(total=self.total_steps, initial=self.global_step, desc="train",
                   disable=not self.acc.is_local_main_process, dynamic_ncols=True)
        status = "done"
        while self.global_step < self.total_steps and status == "done":
            loader = iter(self._epoch_loader(self.epoch, self.step_in_epoch))
            epoch = self.epoch
            while self.epoch == epoch and self.global_step < self.total_steps:
                t0 = time.perf_counter()  # includes waiting for data: tokens/s is end to end
                micro = [next(loader) for _ in range(cfg.grad_accum)]
                m = self.train_step(micro)
                dt = time.perf_counter() - t0
                self.global_step += 1
                self.step_in_epoch += 1
                if self.step_in_epoch == self.steps_per_epoch:
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                m.update(step=self.global_step, epoch=self.epoch, lr=self.scheduler.get_last_lr()[0],
                         step_s=dt, tokens_per_s=m["seq_tokens"] * self.world / dt)
                bar.update(1)
                bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['lr']:.2e}",
                                tok_s=f"{m['tokens_per_s']:.0f}")
                if cfg.eval_every and self.global_step % cfg.eval_every == 0:
                    m["dev_loss"] = self.dev_loss()
                    if self.eval_hook is not None and self.acc.is_main_process:
                        m.update(self.eval_hook(self, self.global_step) or {})
                last = self.global_step == self.total_steps
                if self.global_step % max(cfg.log_every, 1) == 0 or "dev_loss" in m or last:
                    self._log(m)
                stop = self._stop_requested()
                if stop or last or (cfg.save_every and self.global_step % cfg.save_every == 0):
                    self.save()
                if stop:
                    status = "interrupted"
                    break
        bar.close()
        if status == "done" and self.acc.is_main_process:
            self._fit_voice_head()
            ckpt.save_final_adapter(self.run_dir, self.core)
        self.acc.wait_for_everyone()
        self._finished = True
        return status

    def _stop_requested(self) -> bool:
        """Any rank's Ctrl-C stops every rank at the same step."""
        flag = torch.tensor([1.0 if self._stop else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(flag, reduction="sum").item() > 0) if self.world > 1 else self._stop

    def _log(self, m: dict) -> None:
        if self.metrics_file is None:
            return
        row = {k: v for k, v in m.items() if v is not None}
        self.metrics_file.write(row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, self.global_step)

    def save(self) -> None:
        """Checkpoint the current step (main process writes; every rank sends its RNG state)."""
        from accelerate.utils import gather_object

        states = gather_object([ckpt.rng_state()]) if self.world > 1 else [ckpt.rng_state()]
        if self.acc.is_main_process:
            ckpt.save_checkpoint(
                self.run_dir, self.global_step, self.core, self.optimizer, self.scheduler,
                {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "world": self.world}, states,
                config=to_dict(self.cfg))
            ckpt.prune_checkpoints(self.run_dir, self.cfg.keep_last)
        self.acc.wait_for_everyone()

    def cleanup(self) -> None:
        """Close logs, restore the SIGINT handler, release accelerate's state. With several
        processes the process group is torn down only after a finished train(), every rank
        together (a barrier first: ranks that leave the group at different moments can hang
        in its teardown, pytorch/pytorch#75097); a rank that failed leaves it to the launcher,
        which ends the others, instead of waiting in a teardown they never reach."""
        if self.metrics_file is not None:
            self.metrics_file.close()
        if self.tb is not None:
            self.tb.close()
        if self._old_sigint is not None:
            signal.signal(signal.SIGINT, self._old_sigint)
        if self.world == 1:
            self.acc.end_training()
        elif self._finished:
            self.acc.wait_for_everyone()
            self.acc.end_training()
        _reset_accelerate()


def _reset_accelerate() -> None:
    """Forget this run's mixed precision etc., so a later Trainer in the process may differ."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


def run_training(model, train_cfg, run_dir, encoder_config: dict | None = None,
                 eval_hook=None) -> tuple[str, Path]:
    """Train `model` (built) with `train_cfg` in `run_dir`; returns (status, adapter dir)."""
    run_dir = Path(run_dir)
    rejects = Rejects(run_dir / "rejects.jsonl")
    data = load_train_data(train_cfg, rejects)
    if hasattr(model, "adapter"):  # bucket by LLM tokens: less padding in each batch
        data.set_audio_token_rate(model)
    dev = None
    if train_cfg.dev_file is not None:
        dev = TrainData(read_rows(train_cfg.dev_file, train_cfg.objective, rejects), train_cfg,
                        rejects=rejects)
    trainer = Trainer(model, train_cfg, run_dir, data, dev, eval_hook=eval_hook,
                      encoder_config=encoder_config)
    trainer.setup()
    try:
        status = trainer.train()
    finally:
        trainer.cleanup()
    return status, run_dir / "adapter"
