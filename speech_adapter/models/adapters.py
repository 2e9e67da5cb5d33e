"""Adapters from tapped Whisper states to LLM input embeddings (one interface, three kinds).

- `qformer` (DeSTA2 / DeSTA2.5-Audio): one set of learned queries per tapped layer cross-attends
  to that layer through a shared Q-Former; learned per-query softmax weights mix the layers;
  LayerNorm; Linear to the LLM width. A fixed number of tokens per clip.
- `window_qformer` (SALMONN): the same Q-Former applied to each ~0.33 s window; tokens ∝ duration.
- `stack_mlp` (Ultravox, BLSP): stack k frames, RMSNorm → Linear → SwiGLU → RMSNorm → Linear;
  tokens ∝ duration.

Every adapter: `forward(states (B, L, T, D), lengths (B,)) -> (embeds (B, N, H), n_tokens (B,))`
and `num_tokens(lengths) -> n_tokens` (pure, so prompts can be laid out before encoding).
Frames past a clip's length are zeroed / masked so a clip's output does not depend on its batch.

Each adapter first standardizes its input channels (`FeatureNorm`, statistics fitted on training
clips before step 1): Whisper's channel scales differ by orders of magnitude, and a short run on
raw states learns nothing from them (benchmarks/NOTES.md).

With voice features (model.voice_features) the states' last two channels are the encoder's pitch
track; `VoiceToken` turns their voicing-weighted statistics (mean and spread of log F0, share of
voiced frames) into one more token, the first of the clip's: a short run learns "this pitch means
a man" from one clear input more readily than from 384 channels where it is one cue among many.

Each adapter last RMS-normalizes its output tokens (`output_norm`, Ultravox's `ln_post`), the
learned scale starting at the LLM's own token-embedding RMS, so the tokens cannot grow into a
constant prompt that drowns the clip's differences (benchmarks/NOTES.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from speech_adapter.errors import ConfigError
from speech_adapter.models.config import AdapterConfig
from speech_adapter.models.encoder import PITCH_CHANNELS


def _valid_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    return torch.arange(t, device=lengths.device)[None] < lengths[:, None]  # (B, T)


def valid_frame_mean(x: torch.Tensor, lengths: torch.Tensor, dim: int) -> torch.Tensor:
    """`x` (B, ..., T, ...) averaged over each clip's first `lengths` (B,) frames along `dim`,
    which is kept (size 1); padded frames do not count."""
    valid = _valid_mask(lengths.to(x.device), x.shape[dim]).to(x.dtype)  # (B, T)
    shape = [1] * x.ndim
    shape[0], shape[dim] = valid.shape
    valid = valid.reshape(shape)
    return (x * valid).sum(dim, keepdim=True) / valid.sum(dim, keepdim=True).clamp_min(1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=-1)  # (…, 2H) -> 2 × (…, H)
        return nn.functional.silu(gate) * x


class QFormerBlock(nn.Module):
    """Pre-LN block: queries self-attend, cross-attend to the (masked) audio frames, then FFN."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.ln_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ln_cross = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ln_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, q, kv, key_padding_mask):
        """q (B, N, H), kv (B, T, H), key_padding_mask (B, T) True = ignore -> (B, N, H)."""
        h = self.ln_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        kv = self.ln_kv(kv)
        q = q + self.cross_attn(self.ln_cross(q), kv, kv, key_padding_mask=key_padding_mask,
                                need_weights=False)[0]
        return q + self.ffn(self.ln_ffn(q))


class QFormer(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList([QFormerBlock(dim, heads, dropout) for _ in range(layers)])

    def forward(self, q, kv, key_padding_mask):
        for block in self.blocks:
            q = block(q, kv, key_padding_mask)
        return q


class FeatureNorm(nn.Module):
    """(x − mean) / std per tapped layer and channel, as sklearn's StandardScaler.

    Identity until `fit` runs on training clips; mean and std are buffers, so they are saved and
    exported with the adapter's weights and restored on resume.
    """

    def __init__(self, n_layers: int, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_layers, dim))
        self.register_buffer("std", torch.ones(n_layers, dim))

    def forward(self, states):  # (B, L, T, D) -> (B, L, T, D)
        return (states - self.mean[:, None].to(states.dtype)) / self.std[:, None].to(states.dtype)

    @torch.no_grad()
    def fit(self, batches, min_std: float = 1e-4) -> int:
        """Set mean/std from the valid frames of `batches` of (states (B, L, T, D), lengths (B,));
        returns the number of frames read."""
        total = sq = None
        n = 0
        for states, lengths in batches:
            valid = _valid_mask(lengths.to(states.device), states.shape[2])  # (B, T)
            x = states.double().transpose(0, 1)[:, valid]  # (L, B, T, D) -> (L, frames, D)
            total = x.sum(1) if total is None else total + x.sum(1)
            sq = x.pow(2).sum(1) if sq is None else sq + x.pow(2).sum(1)
            n += x.shape[1]
        if n < 2:
            raise ValueError(f"feature statistics need at least 2 frames, got {n}")
        mean = total / n
        std = (sq / n - mean.pow(2)).clamp_min(0).sqrt().clamp_min(min_std)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))
        return n


class VoiceGenderHead(nn.Module):
    """The voice gender head (adapter.voice_gender_loss): `members` MLPs (inputs -> hidden -> 3:
    male, female, none) whose probabilities are averaged; forward gives the log of that average
    (B, 3), which cross-entropy and softmax read as logits. Averaging narrows the spread over
    seeds: on the standard's held-out clips one head moved 87.9-96.6 % with its seed, five averaged
    90.5-94.8 (README session 32)."""

    def __init__(self, in_dim: int, hidden: int, classes: int, members: int = 1):
        super().__init__()
        self.members = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, classes)) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](x).log_softmax(-1)
        probs = torch.stack([m(x).softmax(-1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()

    def fit(self, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, drop_timbre=None,
            lr: float = 1e-3, batch_size: int = 8, progress: bool = False) -> None:
        """Refit every member afresh on inputs x (N, 3 + D') and class indices y (N,) with AdamW,
        `epochs` shuffled passes of `batch_size`; `drop_timbre` (the token's training dropout) is
        applied to x[:, 3:] each pass. Member k draws from seed `seed * 1000 + k` under a forked
        RNG, so the global random state is left as it was. Leaves the head in eval mode."""
        from tqdm.auto import tqdm

        if x.ndim != 2 or len(x) != len(y) or not len(y):
            raise ValueError(f"voice gender head fit: want inputs (N, D) and N labels, got {tuple(x.shape)}, {len(y)}")
        self.float()
        dev = next(self.parameters()).device
        x, y = x.detach().float().to(dev), y.detach().long().to(dev)
        bar = tqdm(total=len(self.members) * epochs, desc="voice gender head", disable=not progress,
                   dynamic_ncols=True)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            for k, member in enumerate(self.members):
                torch.manual_seed(seed * 1000 + k)
                for layer in member.modules():
                    if isinstance(layer, nn.Linear):
                        layer.reset_parameters()
                member.train()
                opt = torch.optim.AdamW(member.parameters(), lr=lr, weight_decay=0.01)
                with torch.enable_grad():
                    for _ in range(epochs):
                        for idx in torch.randperm(len(y)).split(batch_size):
                            xb = x[idx]
                            if drop_timbre is not None and xb.shape[1] > 3:
                                xb = torch.cat([xb[:, :3], drop_timbre(xb[:, 3:])], -1)
                            loss = nn.functional.cross_entropy(member(xb), y[idx])
                            opt.zero_grad()
                            loss.backward()
                            opt.step()
                        bar.update(1)
        bar.close()
        self.eval()


class VoiceToken(nn.Module):
    """One token from the pitch channels: (states (B, L, T, D), lengths) -> (B, H_llm).

    Reads the raw (unstandardized) channels D-2 (octaves above 150 Hz) and D-1 (voicing
    probability) of the first tap: the voicing-weighted mean and spread of log F0 and the mean
    voicing over the clip's frames, through a small MLP.

    With `timbre_dim` D' > 0 (adapter.voice_timbre) the MLP also reads the clip's time-averaged
    standardized Whisper channels of the first tap (the adapter's FeatureNorm output, passed as
    `normed`): a speaker's timbre, averaged over the clip so the words said mostly cancel out. A
    logistic regression on these averages (whisper-tiny.en's layer 1, the first default tap)
    reads gender at 88 % on the standard's held-out clips; the pitch alone at 91 % of the clips
    pyin finds a pitch in (docs/RESULTS_HISTORY.md, session 23).

    With `words` (K, H_llm), the LLM's own embeddings of K words (model.voice_words, e.g. " male"
    and " female"), the MLP gives K logits and the token is their softmax mixture of those
    embeddings (LegoSLM's soft tokens: encoder posteriors times the LLM's embedding table): the
    token can only say something the LLM already reads as a word, in proportions it learns from
    the distillation loss, instead of a free vector the frozen LLM must learn to interpret.

    `timbre_dropout` p (adapter.voice_timbre_dropout): in training, each clip's timbre is zeroed
    (its standardized training mean) with chance p, so the pitch statistics must carry the voice
    on their own; `channel_dropout` q (adapter.voice_timbre_channel_dropout): dropout on each timbre
    channel. In eval mode the timbre is always read whole.

    `timbre_gate` w > 0 (adapter.voice_timbre_gate): the token is `pitch_mlp(pitch statistics) +
    g * mlp(pitch statistics and timbre)`, g = exp(-(mean log2(F0 / 150 Hz) / w)^2): the timbre
    speaks fully where the pitch sits where men's and women's voices meet (the standard's training
    clips: 90 % of the men below 155 Hz, 90 % of the women above 147) and fades to nothing where
    the pitch is clearly one or the other, so an unfamiliar timbre cannot overrule a clear pitch.
    A clip without a voiced frame has mean 0, inside the band: its timbre speaks.

    `gender_head` (adapter.voice_gender_loss > 0): a head of its own (`VoiceGenderHead`: `gender_heads`
    MLPs like the token's, averaged; 3 classes: male, female, none = no speech) on the same inputs
    (pitch statistics and timbre); it shares no weights with the token, so its labels do not reshape
    what the LLM reads (a linear head on the token's output, sessions 30-31, cost speech vs
    non-speech on real recordings 97 -> 71-76 %). In training each forward keeps its log-probabilities
    in `last_gender_logits` (B, 3) for the trainer's auxiliary loss
    (`train.objectives.voice_gender_loss`), from the same pass, and so the same timbre dropout, as
    the token the LLM reads; in eval mode nothing is kept. After the last step the trainer refits it
    alone (adapter.voice_gender_fit_epochs). model.voice_line writes its verdict
    (`gender_probabilities`) into the prompt as a word (`SpeechLM.voice_probabilities`).

    `gender_pitch_view` v (adapter.voice_gender_pitch_view): the verdict averages the head's
    probabilities on the inputs (weight 1 - v) and on them with the timbre zeroed (v), as the fit
    saw a share of clips (timbre dropout): a timbre unlike the training voices' then cannot overrule
    a clear pitch alone."""

    GENDERS = ("male", "female", "none")  # the head's classes, in order ("none": no speech)

    def __init__(self, llm_dim: int, hidden: int = 256, words: torch.Tensor | None = None, timbre_dim: int = 0,
                 timbre_dropout: float = 0.0, channel_dropout: float = 0.0, timbre_gate: float = 0.0,
                 gender_head: bool = False, gender_heads: int = 1, gender_pitch_view: float = 0.0):
        super().__init__()
        out = llm_dim if words is None else words.shape[0]
        self.gender = (VoiceGenderHead(3 + timbre_dim, hidden, len(self.GENDERS), gender_heads)
                       if gender_head else None)
        self.last_gender_logits: torch.Tensor | None = None
        self.gender_pitch_view = gender_pitch_view if timbre_dim else 0.0
        self.timbre_dim, self.timbre_dropout, self.channel_dropout = timbre_dim, timbre_dropout, channel_dropout
        self.timbre_gate = timbre_gate if timbre_dim else 0.0
        self.mlp = nn.Sequential(nn.Linear(3 + timbre_dim, hidden), nn.SiLU(), nn.Linear(hidden, out))
        self.pitch_mlp = (nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, out))
                          if self.timbre_gate else None)
        if words is not None:
            if words.ndim != 2 or words.shape[0] < 2 or words.shape[1] != llm_dim:
                raise ValueError(f"voice words: want (K >= 2, {llm_dim}) embeddings, got {tuple(words.shape)}")
            self.register_buffer("words", words.detach().float().clone())
        else:
            self.words = None

    @staticmethod
    def statistics(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 3): mean log2 F0 (voicing-weighted), its spread, mean voicing."""
        valid = _valid_mask(lengths, states.shape[2]).to(states.dtype)  # (B, T)
        f0, voicing = states[:, 0, :, -2], states[:, 0, :, -1]  # (B, T) each
        w = voicing.clamp(0, 1) * valid
        total = w.sum(-1).clamp_min(1e-3)
        mean = (w * f0).sum(-1) / total
        spread = ((w * (f0 - mean[:, None]).pow(2)).sum(-1) / total).clamp_min(0).sqrt()
        voiced = w.sum(-1) / valid.sum(-1).clamp_min(1)
        return torch.stack([mean, spread, voiced], -1)

    def inputs(self, states, lengths, normed=None) -> torch.Tensor:
        """(B, 3 + timbre_dim): the pitch statistics, then (with timbre) the first tap's Whisper
        channels of `normed` averaged over the clip's valid frames."""
        stats = self.statistics(states, lengths)
        if not self.timbre_dim:
            return stats
        if normed is None:
            raise ValueError("voice timbre: pass the adapter's standardized states as `normed`")
        whisper = normed[:, 0, :, : self.timbre_dim]  # (B, T, D'): the pitch channels left out
        timbre = valid_frame_mean(whisper, lengths, 1)[:, 0]  # (B, D')
        if self.training:
            timbre = self.drop_timbre(timbre)
        return torch.cat([stats, timbre.to(stats.dtype)], -1)

    def drop_timbre(self, timbre: torch.Tensor) -> torch.Tensor:
        """(B, D') timbre with training's dropout applied: each clip's whole timbre zeroed with
        chance `timbre_dropout`, then dropout `channel_dropout` on each channel."""
        if self.timbre_dropout > 0:
            kept = torch.rand(timbre.shape[0], device=timbre.device) >= self.timbre_dropout  # (B,)
            timbre = timbre * kept[:, None].to(timbre.dtype)
        if self.channel_dropout > 0:
            timbre = nn.functional.dropout(timbre, self.channel_dropout)
        return timbre

    def gate(self, mean_octaves: torch.Tensor) -> torch.Tensor:
        """(B,) the timbre's weight for clips whose mean pitch is `mean_octaves` (B,) above the
        pitch reference (150 Hz): 1 there, exp(-1) at `timbre_gate` octaves from it."""
        return torch.exp(-(mean_octaves / self.timbre_gate).pow(2))

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP output for `inputs` x: (B, llm_dim) or, with `words`, (B, K) logits."""
        if not self.timbre_gate:
            return self.mlp(x)
        return self.pitch_mlp(x[:, :3]) + self.gate(x[:, 0])[:, None] * self.mlp(x)

    def gender_probabilities(self, x: torch.Tensor, head: nn.Module | None = None) -> torch.Tensor:
        """(B, 3) the head's verdict over male, female, none for voice inputs x (B, 3 + D') in eval
        mode: its probabilities, averaged with weight `gender_pitch_view` with those it gives the
        same clips with the timbre zeroed (the pitch statistics alone). `head`: another gender head
        to read in the same way (scripts/refit_voice_head.py's refits); default the token's own."""
        head = self.gender if head is None else head
        if head is None:
            raise ConfigError("this voice token has no gender head (model.adapter.voice_gender_loss > 0)")
        probs = head(x).exp()
        v = self.gender_pitch_view  # 0 without a timbre
        if v > 0:
            pitch_only = torch.cat([x[:, :3], torch.zeros_like(x[:, 3:])], -1)
            probs = (1 - v) * probs + v * head(pitch_only).exp()
        return probs

    def mixture(self, states, lengths, normed=None) -> torch.Tensor:
        """(B, K): each clip's weights over the voice words (only with `words`)."""
        return self._out(self.inputs(states, lengths, normed)).softmax(-1)

    def forward(self, states, lengths, normed=None):
        x = self.inputs(states, lengths, normed)
        out = self._out(x)  # (B, H) or, with words, (B, K) logits
        self.last_gender_logits = self.gender(x) if self.gender is not None and self.training else None
        if self.words is None:
            return out
        mix = out.softmax(-1)  # (B, K), in the MLP's dtype (the adapter stays fp32)
        return mix @ self.words.to(mix.dtype)  # (B, K) @ (K, H) -> (B, H)


def _whisper_dim(encoder_dim: int, voice: bool) -> int:
    """The Q-Former's default width: Whisper's, without the pitch channels (heads must divide it)."""
    return encoder_dim - (PITCH_CHANNELS if voice else 0)


class Adapter(nn.Module):
    """Base: `forward(states (B, L, T, D), lengths (B,)) -> (embeds (B, N, H_llm), n_tokens (B,))`."""

    feature_norm: nn.Module
    voice: VoiceToken | None  # set by _init_voice (a class-level default would hide the submodule)

    def _init_voice(self, voice: bool, llm_dim: int, words: torch.Tensor | None = None,
                    cfg: AdapterConfig | None = None, encoder_dim: int = 0) -> None:
        timbre = _whisper_dim(encoder_dim, voice) if voice and cfg is not None and cfg.voice_timbre else 0
        drops = dict(timbre_dropout=cfg.voice_timbre_dropout, channel_dropout=cfg.voice_timbre_channel_dropout,
                     timbre_gate=cfg.voice_timbre_gate) if timbre else {}
        head = (dict(gender_head=True, gender_heads=cfg.voice_gender_heads,
                     gender_pitch_view=cfg.voice_gender_pitch_view)
                if cfg is not None and cfg.voice_gender_loss > 0 else {})
        self.voice = VoiceToken(llm_dim, words=words, timbre_dim=timbre, **head, **drops) if voice else None

    def voice_inputs(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 3 + D'): what the voice token and its gender head read for encoder states
        (B, L, T, D), as the forward pass reads them (the adapter's mode decides the timbre
        dropout)."""
        if self.voice is None:
            raise ConfigError("this adapter has no voice token (model.voice_features)")
        return self.voice.inputs(states, lengths, self.feature_norm(states))

    def _extra_tokens(self) -> int:
        return 1 if self.voice is not None else 0

    def _with_voice(self, states, normed, lengths, out, n_tok):
        """Prepend the voice token (normalized like the others) to each clip's tokens; `normed` is
        `feature_norm(states)`, which the adapter computed already (the timbre reads it)."""
        if self.voice is None:
            return out, n_tok
        token = self.output_norm(self.voice(states, lengths, normed))[:, None].to(out.dtype)  # (B, 1, H)
        return torch.cat([token, out], 1), n_tok + 1

    def _init_feature_norm(self, cfg: AdapterConfig, n_layers: int, encoder_dim: int) -> None:
        self.feature_norm = FeatureNorm(n_layers, encoder_dim) if cfg.feature_norm else nn.Identity()

    def _init_output_norm(self, cfg: AdapterConfig, llm_dim: int) -> None:
        self.output_norm = RMSNorm(llm_dim) if cfg.output_norm else nn.Identity()

    @torch.no_grad()
    def set_output_scale(self, rms: float) -> None:
        """Start the output norm's learned scale at `rms` (the LLM's token-embedding RMS)."""
        if isinstance(self.output_norm, RMSNorm):
            self.output_norm.weight.fill_(rms)

    def num_tokens(self, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LayerPool(nn.Module):
    """Combine L tapped layers into one: learned softmax weights, mean, or the last tap."""

    def __init__(self, n_layers: int, mode: str):
        super().__init__()
        self.mode = mode
        self.weights = nn.Parameter(torch.zeros(n_layers)) if mode == "weighted" else None

    def forward(self, states):  # (B, L, T, D) -> (B, T, D)
        if self.mode == "last":
            return states[:, -1]
        if self.mode == "mean":
            return states.mean(1)
        w = self.weights.softmax(0)  # (L,)
        return torch.einsum("bltd,l->btd", states, w)


class QFormerAdapter(Adapter):
    """DeSTA2: per-layer queries, shared Q-Former, per-query softmax over layers, LN, Linear."""

    def __init__(self, cfg: AdapterConfig, encoder_dim: int, n_layers: int, llm_dim: int, voice: bool = False,
                 voice_words: torch.Tensor | None = None):
        super().__init__()
        self._init_feature_norm(cfg, n_layers, encoder_dim)
        self._init_voice(voice, llm_dim, voice_words, cfg, encoder_dim)
        dim = cfg.qformer_hidden or _whisper_dim(encoder_dim, voice)
        self.n_queries = cfg.num_queries
        self.in_proj = nn.Linear(encoder_dim, dim) if dim != encoder_dim else nn.Identity()
        self.queries = nn.Parameter(torch.randn(n_layers, cfg.num_queries, dim) * 0.02)
        self.qformer = QFormer(dim, cfg.qformer_layers, cfg.qformer_heads, cfg.dropout)
        self.layer_weights = nn.Parameter(torch.zeros(cfg.num_queries, n_layers))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, llm_dim)
        self._init_output_norm(cfg, llm_dim)

    def num_tokens(self, lengths):
        return torch.full_like(torch.as_tensor(lengths), self.n_queries + self._extra_tokens())

    def forward(self, states, lengths):
        b, n_l, t, _ = states.shape
        normed = self.feature_norm(states)
        kv = self.in_proj(normed).flatten(0, 1)  # (B, L, T, D) -> (B*L, T, H)
        pad = ~_valid_mask(lengths, t).repeat_interleave(n_l, 0)  # (B*L, T)
        q = self.queries[None].expand(b, -1, -1, -1).flatten(0, 1)  # (L, N, H) -> (B*L, N, H)
        q = self.qformer(q, kv, pad).unflatten(0, (b, n_l))  # (B, L, N, H)
        w = self.layer_weights.softmax(-1)  # (N, L)
        q = torch.einsum("blnh,nl->bnh", q, w)  # (B, N, H)
        out = self.output_norm(self.proj(self.norm(q)))  # (B, N, H_llm)
        return self._with_voice(states, normed, lengths, out, torch.full_like(torch.as_tensor(lengths), self.n_queries))


class WindowQFormerAdapter(Adapter):
    """SALMONN: pool layers, cut frames into windows of W, a Q-Former per window, Linear."""

    def __init__(self, cfg: AdapterConfig, encoder_dim: int, n_layers: int, llm_dim: int,
                 frame_rate: float = 50.0, voice: bool = False,
                 voice_words: torch.Tensor | None = None):
        super().__init__()
        self._init_feature_norm(cfg, n_layers, encoder_dim)
        self._init_voice(voice, llm_dim, voice_words, cfg, encoder_dim)
        dim = cfg.qformer_hidden or _whisper_dim(encoder_dim, voice)
        self.window = max(1, round(cfg.window_seconds * frame_rate))  # SALMONN: 17 frames
        self.q_per_window = cfg.queries_per_window
        self.pool = LayerPool(n_layers, cfg.layer_pool)
        self.in_proj = nn.Linear(encoder_dim, dim) if dim != encoder_dim else nn.Identity()
        self.queries = nn.Parameter(torch.randn(cfg.queries_per_window, dim) * 0.02)
        self.qformer = QFormer(dim, cfg.qformer_layers, cfg.qformer_heads, cfg.dropout)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, llm_dim)
        self._init_output_norm(cfg, llm_dim)

    def num_tokens(self, lengths):
        return self._window_tokens(lengths) + self._extra_tokens()

    def _window_tokens(self, lengths):
        lengths = torch.as_tensor(lengths)
        return (lengths + self.window - 1) // self.window * self.q_per_window

    def forward(self, states, lengths):
        b, _, t, _ = states.shape
        normed = self.feature_norm(states)
        x = self.in_proj(self.pool(normed))  # (B, T, H)
        w = self.window
        n_win = math.ceil(t / w)
        x = nn.functional.pad(x, (0, 0, 0, n_win * w - t))  # (B, nW*W, H)
        pad = ~_valid_mask(lengths, n_win * w).view(b * n_win, w)  # (B*nW, W)
        pad = pad & ~pad.all(-1, keepdim=True)  # fully padded windows: attend anyway, dropped later
        kv = x.view(b * n_win, w, -1)  # (B*nW, W, H)
        q = self.queries[None].expand(b * n_win, -1, -1)  # (B*nW, q, H)
        q = self.qformer(q, kv, pad)  # (B*nW, q, H)
        q = q.reshape(b, n_win * self.q_per_window, -1)  # (B, nW*q, H)
        n_tok = self._window_tokens(lengths)
        out = self.output_norm(self.proj(self.norm(q)))  # (B, N, H_llm)
        out = out * _valid_mask(n_tok, out.shape[1])[..., None].to(out.dtype)
        return self._with_voice(states, normed, lengths, out, n_tok)


class StackMLPAdapter(Adapter):
    """Ultravox: stack k frames, RMSNorm → Linear → SwiGLU → RMSNorm → Linear."""

    def __init__(self, cfg: AdapterConfig, encoder_dim: int, n_layers: int, llm_dim: int, voice: bool = False,
                 voice_words: torch.Tensor | None = None):
        super().__init__()
        self._init_feature_norm(cfg, n_layers, encoder_dim)
        self._init_voice(voice, llm_dim, voice_words, cfg, encoder_dim)
        self.k = cfg.stack_factor
        self.pool = LayerPool(n_layers, cfg.layer_pool)
        dim_in = encoder_dim * self.k
        self.ln_pre = RMSNorm(dim_in)
        self.linear_1 = nn.Linear(dim_in, cfg.mlp_hidden, bias=False)
        self.act = SwiGLU()
        self.ln_mid = RMSNorm(cfg.mlp_hidden // 2)
        self.dropout = nn.Dropout(cfg.dropout)
        self.linear_2 = nn.Linear(cfg.mlp_hidden // 2, llm_dim, bias=False)
        self._init_output_norm(cfg, llm_dim)

    def num_tokens(self, lengths):
        return self._frame_tokens(lengths) + self._extra_tokens()

    def _frame_tokens(self, lengths):
        return (torch.as_tensor(lengths) + self.k - 1) // self.k

    def forward(self, states, lengths):
        b, _, t, d = states.shape
        normed = self.feature_norm(states)
        x = self.pool(normed)  # (B, L, T, D) -> (B, T, D)
        x = x * _valid_mask(lengths, t)[..., None].to(x.dtype)  # padded frames are exactly zero
        n = math.ceil(t / self.k)
        x = nn.functional.pad(x, (0, 0, 0, n * self.k - t))  # (B, n*k, D)
        x = x.reshape(b, n, self.k * d)  # (B, T, D) -> (B, T/k, D*k)
        x = self.linear_1(self.ln_pre(x))  # (B, T/k, hidden)
        x = self.ln_mid(self.act(x))  # (B, T/k, hidden/2)
        x = self.output_norm(self.linear_2(self.dropout(x)))  # (B, T/k, H_llm)
        n_tok = self._frame_tokens(lengths)
        return self._with_voice(states, normed, lengths, x * _valid_mask(n_tok, n)[..., None].to(x.dtype), n_tok)


def build_adapter(config: AdapterConfig, encoder_dim: int, n_layers: int, llm_dim: int,
                  frame_rate: float = 50.0, voice: bool = False,
                  voice_words: torch.Tensor | None = None) -> Adapter:
    """The adapter named by `config.kind`; `n_layers` = number of tapped encoder layers; `voice`:
    the states end with the pitch channels and the adapter adds a `VoiceToken` (a mixture of
    `voice_words`' embeddings (K, H_llm) when given)."""
    if config.kind == "qformer":
        return QFormerAdapter(config, encoder_dim, n_layers, llm_dim, voice, voice_words)
    if config.kind == "window_qformer":
        return WindowQFormerAdapter(config, encoder_dim, n_layers, llm_dim, frame_rate, voice, voice_words)
    if config.kind == "stack_mlp":
        return StackMLPAdapter(config, encoder_dim, n_layers, llm_dim, voice, voice_words)
    raise ValueError(f"unknown adapter kind {config.kind!r}")
