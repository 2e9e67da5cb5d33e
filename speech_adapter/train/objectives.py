"""The four training objectives, on plain logits/labels tensors plus one model-facing entry point.

- `self_distill` (DeSTA2): CE on the backbone's own answers; only response tokens count.
- `kl_distill` (Ultravox, DiVA): KL(teacher || student) * T^2 where the teacher is the SAME frozen
  LLM reading the text description in place of the audio (LoRA switched off, no second copy),
  aligned on response tokens; optionally mixed with CE.
- `continuation` (BLSP): the same CE; the rows carry the backbone's continuation of the transcript.
- `task_sft`: the same CE on ground-truth labels, the naive baseline that forgets.

Hard-token filtering (the notes' "drop the hardest targets"): the response tokens the frozen
backbone finds least likely (lowest teacher probability) are left out of the loss.

Label convention (Hugging Face): `labels[b, t]` is the token at position t, -100 where it is not
a target; logits at t-1 predict it, so every function here shifts by one.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

IGNORE = -100


def shift(logits: torch.Tensor, labels: torch.Tensor):
    """Align predictions with targets: (B, T, V), (B, T) -> (B, T-1, V), (B, T-1)."""
    return logits[:, :-1], labels[:, 1:]


def response_ce(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None = None):
    """Mean CE over response tokens (labels != -100), optionally only where `keep` (B, T-1) is True."""
    lg, lb = shift(logits, labels)  # (B, T-1, V), (B, T-1)
    mask = lb != IGNORE
    if keep is not None:
        mask = mask & keep
    if not mask.any():
        return lg.sum() * 0.0  # keeps the graph; a batch with no targets adds nothing
    return F.cross_entropy(lg[mask].float(), lb[mask])  # (N, V), (N,) -> ()


def response_logits(logits: torch.Tensor, labels: torch.Tensor):
    """Per row, the logits that predict its response tokens: list of (N_b, V), list of (N_b,)."""
    lg, lb = shift(logits, labels)
    mask = lb != IGNORE  # (B, T-1)
    return [lg[b][mask[b]] for b in range(lg.shape[0])], [lb[b][mask[b]] for b in range(lg.shape[0])]


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(target) at every shifted position, (B, T-1); 0 where there is no target."""
    lg, lb = shift(logits, labels)
    lp = torch.log_softmax(lg.float(), dim=-1)  # (B, T-1, V)
    safe = lb.clamp_min(0)
    out = lp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return out.masked_fill(lb == IGNORE, 0.0)


def hard_token_keep(logprobs: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """Keep-mask that drops floor(p * N) of the N masked tokens with the lowest `logprobs`.

    `logprobs`, `mask`: (B, T-1). Ties are broken by position, so the choice is deterministic.
    """
    keep = mask.clone()
    n = int(mask.sum())
    drop = math.floor(p * n)
    if drop <= 0:
        return keep
    flat = logprobs.masked_fill(~mask, float("inf")).flatten()  # (B*(T-1),)
    idx = torch.argsort(flat, stable=True)[:drop]
    keep.view(-1)[idx] = False
    return keep


def kl_loss(student_logits, student_labels, teacher_logits, teacher_labels,
            temperature: float = 1.0, keep: list[torch.Tensor] | None = None) -> torch.Tensor:
    """KL(teacher || student) * T^2, averaged over the response tokens both sequences share.

    Student and teacher sequences differ in their prompts (audio embeddings vs. description
    text) but carry the same response tokens, so the k-th response token of row b is aligned
    between them. Raises ValueError when a row's response tokens differ.
    `keep`: optional per-row bool masks (N_b,) from hard-token filtering.
    """
    s_rows, s_tgt = response_logits(student_logits, student_labels)
    t_rows, t_tgt = response_logits(teacher_logits, teacher_labels)
    s_all, t_all = [], []
    for b, (s, t, st, tt) in enumerate(zip(s_rows, t_rows, s_tgt, t_tgt)):
        if st.shape != tt.shape or not torch.equal(st, tt):
            raise ValueError(f"kl_distill: row {b} has different response tokens in the audio "
                             f"({st.numel()}) and text ({tt.numel()}) batches")
        if keep is not None:
            s, t = s[keep[b]], t[keep[b]]
        s_all.append(s)
        t_all.append(t)
    s = torch.cat(s_all).float() / temperature  # (N, V)
    t = torch.cat(t_all).float() / temperature  # (N, V)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    t_logp = torch.log_softmax(t, dim=-1)
    s_logp = torch.log_softmax(s, dim=-1)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # (N,)
    return kl.mean() * temperature ** 2


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


def _out(o):
    """(loss, logits, labels) from a SpeechLMOutput or a plain tuple."""
    if isinstance(o, tuple):
        return o
    return o.loss, o.logits, o.labels


def compute_loss(model, examples: list[dict], cfg, text_only: bool = False, encode=None, core=None,
                 batch: dict | None = None):
    """Loss of one micro-batch under `cfg.objective`; returns (loss, stats dict).

    `model`: the (possibly DDP-wrapped) SpeechLM whose forward is differentiated; `core`: the
    unwrapped one, for collate and the teacher pass (default: `model`). `examples` are SpeechLM
    example dicts; `text_only` rows (replay) always use CE. `encode(batch) -> (states, lengths)`
    supplies cached encoder states; `batch`: `core.collate(examples)` made ahead (DataLoader
    workers). `stats`: "tokens" (response tokens in the loss), "seq_tokens".
    """
    core = model if core is None else core
    batch = core.collate(examples, mode="audio") if batch is None else batch
    states = encode(batch) if encode is not None and not text_only else None
    _, logits, labels = _out(model(batch, encoder_states=states, logits="all"))
    mask = shift(logits, labels)[1] != IGNORE  # (B, T-1)
    need_teacher = not text_only and (cfg.objective == "kl_distill" or cfg.hard_token_filter > 0)
    t_logits = t_labels = None
    if need_teacher:
        with teacher_mode(core):
            t_batch = core.collate(examples, mode="text")
            _, t_logits, t_labels = _out(core(t_batch, logits="all"))
    am = batch.get("attention_mask")
    stats = {"seq_tokens": int(am.sum()) if am is not None else int(labels.numel())}
    if cfg.objective == "kl_distill" and not text_only:
        keep_rows = None
        if cfg.hard_token_filter > 0:
            lp = target_logprobs(t_logits, t_labels)
            t_mask = shift(t_logits, t_labels)[1] != IGNORE
            keep_t = hard_token_keep(lp, t_mask, cfg.hard_token_filter)
            keep_rows = [keep_t[b][t_mask[b]] for b in range(keep_t.shape[0])]
        loss = kl_loss(logits, labels, t_logits, t_labels, cfg.kl_temperature, keep_rows)
        stats["kl"] = float(loss.detach())
        if cfg.ce_weight > 0:
            ce = response_ce(logits, labels)
            stats["ce"] = float(ce.detach())
            loss = loss + cfg.ce_weight * ce
        tokens = int(torch.cat(keep_rows).sum()) if keep_rows is not None else int(mask.sum())
    else:
        keep = None
        if need_teacher:  # hard-token filter for the CE objectives
            t_lp = target_logprobs(t_logits, t_labels)
            t_mask = shift(t_logits, t_labels)[1] != IGNORE
            keep_t = hard_token_keep(t_lp, t_mask, cfg.hard_token_filter)
            if not torch.equal(mask.sum(1), t_mask.sum(1)):
                raise ValueError("hard_token_filter: audio and text batches differ in response length")
            keep = torch.zeros_like(mask)
            for b in range(mask.shape[0]):  # carry the teacher's per-row choice to student positions
                keep[b][mask[b]] = keep_t[b][t_mask[b]]
        loss = response_ce(logits, labels, keep)
        stats["ce"] = float(loss.detach())
        tokens = int((mask & keep).sum()) if keep is not None else int(mask.sum())
    stats["tokens"] = tokens
    return loss, stats
