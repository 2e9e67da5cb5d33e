"""The four training objectives, on aligned target logits plus one model-facing entry point.

- `self_distill` (DeSTA2): CE on the backbone's own answers; only response tokens count.
- `kl_distill` (Ultravox, DiVA): KL(teacher || student) * T^2 where the teacher is the SAME frozen
  LLM reading the text description in place of the audio (LoRA switched off, no second copy),
  aligned on response tokens; optionally mixed with CE.
- `continuation` (BLSP): the same CE; the rows carry the backbone's continuation of the transcript.
- `task_sft`: the same CE on ground-truth labels, the naive baseline that forgets.

Hard-token filtering: the response tokens the frozen
backbone finds least likely (lowest teacher probability) are left out of the loss. Key words:
the response tokens that name the clip's attribute (the gender in "The speaker is a woman.")
can weigh more than the rest (`train.key_word_weight`), the sentence itself staying the teacher's.

Every loss works on *target* logits: (N, V) rows that predict the N response tokens (N,) in
batch order, as `SpeechLM.forward` returns them — the LM head runs on
response positions only. A student batch (audio prompt) and a teacher batch (text prompt) of the
same rows therefore line up token by token although their prompts differ in length.
`targets_from_all` derives the same from full (B, S, V) logits with Hugging Face labels.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from speech_adapter.errors import ConfigError

IGNORE = -100


def targets_from_all(logits: torch.Tensor, labels: torch.Tensor):
    """(B, S, V) logits + (B, S) labels (-100 = not a target) -> (N, V), (N,) in batch order."""
    lg, lb = logits[:, :-1], labels[:, 1:]  # position t predicts token t+1
    mask = lb != IGNORE  # (B, S-1)
    return lg[mask], lb[mask]


def row_weights(batch_labels: torch.Tensor, keep: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
    """Per-target weights (N,) that give every row of the batch the same total weight.

    `batch_labels` (B, S) as collated (-100 = not a target); targets are taken in batch order,
    as `targets_from_all` takes them, then filtered by `keep`. A row's targets each weigh
    1 / (its number of targets), so a one-word answer counts as much as a long description.
    `scale` (one per kept target, `key_scale`) shares a row's weight unevenly: in proportion to
    it, the row's total staying the same."""
    mask = batch_labels[:, 1:] != IGNORE  # (B, S-1)
    row = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]  # (N,)
    if keep is not None:
        row = row[keep]
    scale = torch.ones(row.shape, device=row.device) if scale is None else scale.float()
    totals = torch.zeros(mask.shape[0], device=row.device).index_add_(0, row, scale)
    return scale / totals[row]


def key_scale(batch: dict, weight: float, keep: torch.Tensor | None = None) -> torch.Tensor | None:
    """Per-target loss scale (N,): `weight` at the targets the batch's `key_mask` marks (tokens of
    words that name the clip's attribute, e.g. "woman"), 1 elsewhere; None when there is nothing
    to scale. Targets in batch order, filtered by `keep`, as `row_weights` takes them."""
    if weight == 1.0 or batch.get("key_mask") is None:
        return None
    labels = batch["labels"]
    key = batch["key_mask"][:, 1:][labels[:, 1:] != IGNORE]  # (N,)
    if keep is not None:
        key = key[keep.to(key.device)]
    return 1.0 + (weight - 1.0) * key.float()


def _mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return values.mean() if weights is None else (values * weights).sum() / weights.sum()


def response_ce(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None = None,
                weights: torch.Tensor | None = None):
    """Mean CE of target logits (N, V) against labels (N,), over tokens where `keep` (N,) is True;
    `weights` (one per kept token, `row_weights`) make it a weighted mean."""
    if keep is not None:
        logits, labels = logits[keep], labels[keep]
    if labels.numel() == 0:
        return logits.sum() * 0.0  # keeps the graph; a batch with no targets adds nothing
    return _mean(F.cross_entropy(logits.float(), labels, reduction="none"), weights)


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per target, (N,)."""
    return torch.log_softmax(logits.float(), -1).gather(-1, labels[:, None]).squeeze(-1)


def hard_token_keep(logprobs: torch.Tensor, p: float) -> torch.Tensor:
    """Keep-mask (N,) dropping the floor(p * N) targets with the lowest `logprobs` (ties: first)."""
    keep = torch.ones_like(logprobs, dtype=torch.bool)
    drop = math.floor(p * logprobs.numel())
    if drop > 0:
        keep[torch.argsort(logprobs, stable=True)[:drop]] = False
    return keep


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
            keep: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) * T^2, mean over aligned targets; logits (N, V), `keep` (N,),
    `weights` as in `response_ce`."""
    if keep is not None:
        student, teacher = student[keep], teacher[keep]
    if student.shape[0] == 0:
        return student.sum() * 0.0
    t_logp = torch.log_softmax(teacher.float() / temperature, -1)  # (N, V)
    s_logp = torch.log_softmax(student.float() / temperature, -1)  # (N, V)
    return _mean((t_logp.exp() * (t_logp - s_logp)).sum(-1), weights) * temperature ** 2


@contextlib.contextmanager
def teacher_mode(model):
    """The frozen backbone as teacher: LoRA (a peft model's adapter) disabled, no grad, eval."""
    llm = getattr(model, "llm", None)
    disable = getattr(llm, "disable_adapter", None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), (disable() if callable(disable) else contextlib.nullcontext()):
            yield
    finally:
        model.train(was_training)


def require_voice_features(core) -> None:
    """Voice-only rows (train.voice_only_tasks) keep the pitch track: a model without it is a
    ConfigError (the trainer checks at setup, before step 1)."""
    if not getattr(core.encoder, "voice", False):
        raise ConfigError("train.voice_only_tasks: needs model.voice_features: true (the pitch track "
                          "is what a voice-only row keeps)")


def voice_only_states(core, encoder_states, clips: torch.Tensor, keep: str = "mean"):
    """`encoder_states` (states (A, L, T, D), lengths) with the Whisper channels of the `clips`
    (A,) bool replaced, the pitch channels kept (train.voice_only_tasks). `keep="mean"`: by the
    adapter's fitted mean (0 once standardized), so those clips reach the LLM as their pitch track
    and voice token only; `keep="clip_average"`: on every frame by the clip's own average over its
    valid frames, per layer, so its timbre stays and the words said go (train.voice_only_keep)."""
    from speech_adapter.models.adapters import valid_frame_mean
    from speech_adapter.models.encoder import PITCH_CHANNELS

    require_voice_features(core)
    states, lengths = encoder_states
    d = states.shape[-1] - PITCH_CHANNELS
    if keep == "clip_average":
        fill = valid_frame_mean(states[..., :d], lengths, 2)  # (A, L, 1, d)
    elif keep == "mean":
        norm = getattr(core.adapter, "feature_norm", None)
        mean = norm.mean[:, :d] if hasattr(norm, "mean") else torch.zeros(states.shape[1], d)  # (L, d)
        fill = mean[None, :, None].to(states.device, states.dtype).expand(states.shape[0], -1, -1, -1)
    else:
        raise ValueError(f"voice_only_states: keep must be 'mean' or 'clip_average', got {keep!r}")
    states = states.clone()
    picked = clips.to(states.device)
    states[picked, ..., :d] = fill[picked].expand(-1, -1, states.shape[2], -1)
    return states, lengths


def voice_gender_loss(core, examples: list[dict]) -> torch.Tensor | None:
    """The auxiliary gender loss (model.adapter.voice_gender_loss > 0): cross-entropy of the voice
    token's gender head, from the forward pass just run, against each audio example's `gender`
    ("male"/"female", "none" for no speech; examples without one are left out), times the weight; None when the model
    has no head or the pass kept no logits. Clears the kept logits."""
    voice = getattr(getattr(core, "adapter", None), "voice", None)
    logits = getattr(voice, "last_gender_logits", None)
    if logits is None:
        return None
    voice.last_gender_logits = None
    genders = [ex.get("gender") for ex in examples if ex.get("audio") is not None]
    if len(genders) != logits.shape[0]:
        raise ValueError(f"voice gender head: {logits.shape[0]} clips in the pass, {len(genders)} audio examples")
    classes = {g: i for i, g in enumerate(voice.GENDERS)}
    picked = [i for i, g in enumerate(genders) if g in classes]
    if not picked:
        return logits.sum() * 0.0  # keeps the graph
    target = torch.tensor([classes[genders[i]] for i in picked], device=logits.device)
    ce = F.cross_entropy(logits[picked].float(), target)
    return core.config.adapter.voice_gender_loss * ce


def _out(o):
    """(loss, logits, labels) from a SpeechLMOutput or a plain tuple."""
    return o if isinstance(o, tuple) else (o.loss, o.logits, o.labels)


def compute_loss(model, examples: list[dict], cfg, text_only: bool = False, encode=None, core=None,
                 batch: dict | None = None):
    """Loss of one micro-batch under `cfg.objective`; returns (loss, stats dict).

    `model`: the (possibly DDP-wrapped) SpeechLM whose forward is differentiated; `core`: the
    unwrapped one, for collate and the teacher pass (default: `model`). `examples` are SpeechLM
    example dicts; `text_only` rows (replay) always use CE. `encode(batch) -> (states, lengths)`
    supplies cached encoder states; `batch`: `core.processor.collate(examples)` made ahead (DataLoader
    workers). `stats`: "tokens" (response tokens in the loss), "seq_tokens" (batch tokens).
    Raises ValueError when the audio and text batches disagree on the response tokens.
    """
    core = model if core is None else core
    batch = core.processor.collate(examples, mode="audio") if batch is None else batch
    states = encode(batch) if encode is not None and not text_only else None
    voice_only = [bool(ex.get("voice_only")) for ex in examples if ex.get("audio") is not None]
    if any(voice_only) and not text_only:
        states = voice_only_states(core, states if states is not None else core.encode_audio(batch),
                                   torch.tensor(voice_only), keep=cfg.voice_only_keep)
    _, logits, labels = _out(model(batch, encoder_states=states))  # (N, V), (N,)
    aux = None if text_only else voice_gender_loss(core, examples)  # read before any other pass
    am = batch.get("attention_mask")
    stats = {"seq_tokens": int(am.sum()) if am is not None else int(labels.numel())}

    kl = cfg.objective == "kl_distill" and not text_only
    t_logits, keep = None, None
    if not text_only and (kl or cfg.hard_token_filter > 0):
        with teacher_mode(core):
            t_batch = core.processor.collate(examples, mode="text")
            _, t_logits, t_labels = _out(core(t_batch))  # (N, V), (N,)
        if not torch.equal(t_labels.to(labels.device), labels):
            raise ValueError("the audio and text batches of the same rows have different response tokens")
        t_logits = t_logits.to(logits.device)
        if cfg.hard_token_filter > 0:
            keep = hard_token_keep(target_logprobs(t_logits, labels), cfg.hard_token_filter)

    scale = key_scale(batch, cfg.key_word_weight, keep)
    scale = None if scale is None else scale.to(labels.device)
    weights = scale
    if cfg.loss_average == "row":
        weights = row_weights(batch["labels"].to(labels.device), keep, scale)
    if kl:
        loss = kl_loss(logits, t_logits, cfg.kl_temperature, keep, weights)
        stats["kl"] = float(loss.detach())
        if cfg.ce_weight > 0:
            ce = response_ce(logits, labels, keep, weights)
            stats["ce"] = float(ce.detach())
            loss = loss + cfg.ce_weight * ce
    else:
        loss = response_ce(logits, labels, keep, weights)
        stats["ce"] = float(loss.detach())
    if aux is not None:
        stats["voice_gender"] = float(aux.detach())
        loss = loss + aux
    stats["tokens"] = int(keep.sum()) if keep is not None else int(labels.numel())
    return loss, stats
