"""Model configs: encoder taps, adapter kind and sizes, optional LoRA.

Defaults follow the peers: DeSTA2 (4 evenly spaced Whisper layers, a 64-query Q-Former),
SALMONN (window Q-Former, ~0.33 s windows, 1 query each), Ultravox (stack 8 frames, SwiGLU MLP).
Every setting is declared once here; `validate()` raises `ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from speech_adapter.audio import MAX_AUDIO_SECONDS
from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError
from speech_adapter.paths import OFFLINE_LLM, OFFLINE_WHISPER
from speech_adapter.prompts import TRANSCRIPT_LINE

AdapterKind = Literal["qformer", "window_qformer", "stack_mlp"]


@dataclass
class AdapterConfig:
    kind: AdapterKind = help_field("qformer", "qformer (DeSTA2, fixed tokens), window_qformer "
                                   "(SALMONN, tokens ∝ duration) or stack_mlp (Ultravox, tokens ∝ duration)")
    num_queries: int = help_field(64, "qformer: learned queries = audio tokens per clip (DeSTA2: 64)")
    qformer_layers: int = help_field(2, "qformer/window_qformer: Q-Former blocks (self-attn, cross-attn, FFN)")
    qformer_heads: int = help_field(8, "qformer/window_qformer: attention heads; must divide hidden size")
    qformer_hidden: Optional[int] = help_field(None, "qformer/window_qformer: width; None = encoder width")
    window_seconds: float = help_field(1 / 3, "window_qformer: window length in seconds (SALMONN: 0.333)")
    queries_per_window: int = help_field(1, "window_qformer: audio tokens per window (SALMONN: 1)")
    stack_factor: int = help_field(8, "stack_mlp: encoder frames stacked into one token (Ultravox: 8)")
    mlp_hidden: int = help_field(1024, "stack_mlp: hidden width before SwiGLU (halved by the gate)")
    layer_pool: Literal["weighted", "mean", "last"] = help_field(
        "weighted", "window_qformer/stack_mlp: combine tapped layers by learned softmax weights, mean, "
        "or use the last tap (qformer always learns per-query layer weights, as DeSTA2)")
    dropout: float = help_field(0.0, "dropout inside the adapter")
    feature_norm: bool = help_field(
        True, "standardize each tapped layer's channels with mean/std fitted on training clips before "
              "step 1 (Whisper's channel scales differ ~50x; unscaled, the adapter is slow to use the audio)")
    output_norm: bool = help_field(
        True, "RMS-normalize each output token (Ultravox's ln_post), its learned scale starting at the "
               "LLM's own token-embedding RMS, so audio tokens start as loud as text tokens")
    voice_timbre: bool = help_field(
        False, "with model.voice_features: the voice token also reads the first tapped layer's "
               "standardized Whisper channels averaged over the clip (the speaker's timbre, the words "
               "mostly averaged out), not only the pitch statistics; a linear probe reads gender from "
               "those averages at 88 % on held-out clips (docs/RESULTS_HISTORY.md, session 23)")
    voice_timbre_dropout: float = help_field(
        0.0, "with voice_timbre: the chance, per training clip and step, that the voice token reads "
             "no timbre (the standardized average set to 0, the training mean), so the pitch has to "
             "name the voice alone and an unfamiliar timbre cannot overrule a clear pitch; the "
             "Whisper tokens stay (0 = off; inference always reads the timbre)")
    voice_timbre_channel_dropout: float = help_field(
        0.0, "with voice_timbre: dropout on each channel of the timbre the voice token reads, in "
             "training (a speaker's 384 averages are nearly a fingerprint: with most of them dropped "
             "at random the token cannot name a training voice from its timbre and leans on pitch; "
             "0 = off)")
    voice_timbre_gate: float = help_field(
        0.0, "with voice_timbre: the voice token becomes a pitch-only MLP plus the timbre MLP weighted by "
             "exp(-(octaves between the clip's mean pitch and 150 Hz / this)^2): the timbre refines the "
             "voice where men's and women's pitches overlap and cannot overrule a clearly low or high "
             "pitch (a held-out man with a clearly male pitch was called a woman from his timbre, "
             "README session 27); in octaves, e.g. 0.15; 0 = off (the timbre is read at every pitch)")
    voice_gender_loss: float = help_field(
        0.0, "with model.voice_features: the weight of an auxiliary loss in training: a head of its own "
             "(MLPs on the voice token's inputs, pitch statistics and timbre, sharing nothing with the "
             "token) names the clip's voice (male/female from the training row's description fields or "
             "metadata, none for a clip without speech; mixed speakers are left out) and its "
             "cross-entropy is added to the distillation loss. The head is saved with the adapter; at "
             "inference only model.voice_line reads it; 0 = off (no head)")
    voice_gender_heads: int = help_field(
        5, "with voice_gender_loss: how many MLPs the voice gender head averages (their probabilities); "
           "on the standard's held-out clips one head moved 87.9-96.6 % with its seed, five averaged "
           "90.5-94.8 (README session 32)")
    voice_gender_fit_epochs: int = help_field(
        100, "with voice_gender_loss: after the adapter's last step, fit the voice gender head afresh "
             "for this many passes over the training clips' voice inputs (each distinct labelled clip "
             "once per pass, the adapter's timbre dropout on), since its inputs do not depend on "
             "anything the adapter learns; one head after 240 steps of joint training: 90.5 % held out; "
             "five refitted for 100 passes: 90.5-94.8 over four seeds, 30 or 300 passes of one head did "
             "worse (README session 32); 0 = keep the jointly trained head")
    voice_gender_pitch_view: float = help_field(
        0.0, "with voice_gender_loss and voice_timbre: the head's verdict averages its probabilities on "
             "the clip's inputs (weight 1 - this) and on the same inputs with the timbre zeroed (this), "
             "the two kinds of input it is fitted on (voice_timbre_dropout zeroes the timbre of that "
             "share of clips), so a timbre unlike any training voice's cannot overrule a clearly low or "
             "high pitch alone. Inference only: training and the head's fit are unchanged. On session 33's "
             "seed-0 head, 0.5: held-out clips 105 -> 108 of 116, real voices 48 -> 48 of 50 (README "
             "session 35); 0 = the inputs as they are")

    def validate(self) -> None:
        for key in ("num_queries", "qformer_layers", "qformer_heads", "queries_per_window",
                    "stack_factor", "mlp_hidden"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.qformer_hidden is not None and self.qformer_hidden % self.qformer_heads:
            raise ConfigError(f"qformer_hidden: {self.qformer_hidden} is not divisible by "
                              f"qformer_heads={self.qformer_heads}")
        if self.mlp_hidden % 2:
            raise ConfigError(f"mlp_hidden: must be even (SwiGLU halves it), got {self.mlp_hidden}")
        if not 0 < self.window_seconds <= 30:
            raise ConfigError(f"window_seconds: must be in (0, 30], got {self.window_seconds}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 0 <= self.voice_timbre_dropout <= 1:
            raise ConfigError(f"voice_timbre_dropout: must be in [0, 1], got {self.voice_timbre_dropout}")
        if not 0 <= self.voice_timbre_channel_dropout < 1:
            raise ConfigError("voice_timbre_channel_dropout: must be in [0, 1), got "
                              f"{self.voice_timbre_channel_dropout}")
        if not 0 <= self.voice_timbre_gate <= 4:
            raise ConfigError(f"voice_timbre_gate: must be in [0, 4] octaves, got {self.voice_timbre_gate}")
        if not self.voice_gender_loss >= 0:
            raise ConfigError(f"voice_gender_loss: must be >= 0, got {self.voice_gender_loss}")
        if self.voice_gender_heads < 1:
            raise ConfigError(f"voice_gender_heads: must be >= 1, got {self.voice_gender_heads}")
        if self.voice_gender_fit_epochs < 0:
            raise ConfigError(f"voice_gender_fit_epochs: must be >= 0, got {self.voice_gender_fit_epochs}")
        if not 0 <= self.voice_gender_pitch_view <= 1:
            raise ConfigError(f"voice_gender_pitch_view: must be in [0, 1], got {self.voice_gender_pitch_view}")
        if self.voice_gender_pitch_view > 0 and not (self.voice_timbre and self.voice_gender_loss > 0):
            raise ConfigError("voice_gender_pitch_view: needs the voice gender head on a timbre "
                              "(voice_gender_loss > 0 and voice_timbre: true)")


@dataclass
class LoraConfig:
    rank: int = help_field(8, "LoRA rank r; lower forgets less, 0 is not allowed: set lora: null")
    alpha: float = help_field(16.0, "LoRA alpha (scale = alpha / rank)")
    dropout: float = help_field(0.05, "LoRA dropout")
    target_modules: list[str] = help_field(
        default_factory=lambda: ["q_proj", "v_proj"], help="LLM module names that get LoRA (peft)")

    def validate(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"rank: must be >= 1, got {self.rank} (set lora: null for no LoRA)")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("target_modules: must name at least one module")


@dataclass
class ModelConfig:
    encoder: str = help_field(OFFLINE_WHISPER, "Whisper model: offline:NAME, local dir, hub id (downloaded unless HF_HUB_OFFLINE) or tiny:whisper")
    llm: str = help_field(OFFLINE_LLM, "chat LLM: offline:NAME, local dir, hub id (downloaded unless HF_HUB_OFFLINE) or tiny:llm")
    encoder_layers: Optional[list[int]] = help_field(
        None, "Whisper layers to tap, 1-based (the last gets Whisper's final LayerNorm); "
        "None = 4 evenly spaced, as DeSTA2")
    adapter: AdapterConfig = help_field(default_factory=AdapterConfig, help="the adapter between encoder and LLM")
    lora: Optional[LoraConfig] = help_field(None, "LoRA on the LLM via peft; null = LLM fully frozen")
    use_transcript: bool = help_field(
        False, "DeSTA2: put the transcript after the audio tokens (row's transcript, else Whisper decoding)")
    transcript_line: str = help_field(
        TRANSCRIPT_LINE, "with use_transcript: the line after the audio tokens that carries the "
        "transcript, '{transcript}' marking where it goes (the default quotes it as heard; the "
        "cascade's 'Transcript of the audio: {transcript}' cost transcription WER, docs/RESULTS_HISTORY.md)")
    voice_line: Optional[str] = help_field(
        None, "with adapter.voice_gender_loss: a line that says the voice in words, '{voice}' marking "
        "where 'male' or 'female' goes, '{person}' where 'a male speaker, a man,' (the teacher's words), "
        "e.g. \"The speaker's voice is {voice}.\" after the transcript line, or, holding '{transcript}', "
        "in its place: 'I heard {person} say: \"{transcript}\"' ('{person}' and '{voice}' may both appear, each "
        "once: '... The speaker is {voice}.' was tried, README session 34). In training the clip's label, at "
        "inference the voice token's gender head's verdict (where the head hears no speech, no voice: "
        "the plain transcript line): the frozen LLM reads the gender as text, as it reads Whisper's "
        "words, instead of from one soft token among the clip's others; null = no line")
    voice_features: bool = help_field(
        False, "append a pitch track (librosa pyin: log F0, voicing) to the encoder states and give the "
        "adapter one voice token from its statistics: Whisper's states carry a voice's gender less "
        "clearly than its pitch does (docs/RESULTS_HISTORY.md); costs ~0.05 s of CPU a second of audio")
    voice_words: list[str] = help_field(
        default_factory=list, help="with voice_features: the voice token becomes a learned softmax "
        "mixture of these words' own LLM embeddings (a word of several tokens: their mean), e.g. "
        "[' male', ' female'], instead of a free vector the frozen LLM must learn to read "
        "(LegoSLM-style soft tokens); [] = a free vector. On the standard the token followed the "
        "pitch, yet the model's gender answers got worse (one run, docs/RESULTS_HISTORY.md, session 18)")
    max_audio_seconds: float = help_field(
        MAX_AUDIO_SECONDS, "longest clip accepted; clips over 30 s are encoded in 30 s Whisper windows and joined")
    placeholder: str = help_field("<|AUDIO|>", "special token expanded into the adapter outputs")
    dtype: Literal["float32", "bfloat16", "float16"] = help_field(
        "float32", "dtype of the frozen encoder and LLM (fp32 on CPU, bf16 on GPU); the adapter stays fp32")
    trust_remote_code: bool = help_field(False, "allow model code from the LLM dir (only if you trust it)")

    def validate(self) -> None:
        if self.encoder_layers is not None:
            if not self.encoder_layers:
                raise ConfigError("encoder_layers: give at least one layer or null for the default")
            if any(i < 1 for i in self.encoder_layers):
                raise ConfigError(f"encoder_layers: layers are 1-based, got {self.encoder_layers}")
            if sorted(set(self.encoder_layers)) != list(self.encoder_layers):
                raise ConfigError(f"encoder_layers: must be strictly increasing, got {self.encoder_layers}")
        if self.max_audio_seconds <= 0:
            raise ConfigError(f"max_audio_seconds: must be > 0, got {self.max_audio_seconds}")
        if self.transcript_line.count("{transcript}") != 1:
            raise ConfigError("transcript_line: must contain '{transcript}' exactly once, got "
                              f"{self.transcript_line!r}")
        if self.adapter.voice_timbre and not self.voice_features:
            raise ConfigError("adapter.voice_timbre: needs voice_features: true (the timbre goes into the voice token)")
        for key in ("voice_timbre_dropout", "voice_timbre_channel_dropout", "voice_timbre_gate"):
            if getattr(self.adapter, key) and not self.adapter.voice_timbre:
                raise ConfigError(f"adapter.{key}: needs adapter.voice_timbre: true (it acts on the timbre)")
        if self.adapter.voice_gender_loss and not self.voice_features:
            raise ConfigError("adapter.voice_gender_loss: needs voice_features: true (the head reads the voice token)")
        if self.voice_line is not None:
            counts = [self.voice_line.count(mark) for mark in ("{voice}", "{person}", "{transcript}")]
            if not counts[0] + counts[1] or max(counts) > 1 or "\n" in self.voice_line:
                raise ConfigError("voice_line: must be one line containing '{voice}' or '{person}' or both, "
                                  f"each at most once (and '{{transcript}}' at most once), got {self.voice_line!r}")
            if "{transcript}" in self.voice_line and not self.use_transcript:
                raise ConfigError("voice_line: '{transcript}' needs use_transcript: true")
            if not self.adapter.voice_gender_loss:
                raise ConfigError("voice_line: needs adapter.voice_gender_loss > 0 (the line says the "
                                  "gender head's verdict)")
        if self.voice_words:
            if not self.voice_features:
                raise ConfigError("voice_words: needs voice_features: true (the words mix into the voice token)")
            if len(self.voice_words) < 2 or len(set(self.voice_words)) != len(self.voice_words):
                raise ConfigError(f"voice_words: give at least two different words, got {self.voice_words}")
            if any(not str(w).strip() for w in self.voice_words):
                raise ConfigError(f"voice_words: empty word in {self.voice_words}")
        if not self.placeholder or any(c.isspace() for c in self.placeholder):
            raise ConfigError(f"placeholder: must be a non-empty token without spaces, got {self.placeholder!r}")

    def tapped_layers(self, n_layers: int) -> list[int]:
        """The 1-based encoder layers to tap for an encoder with `n_layers` layers."""
        if self.encoder_layers is None:
            k = min(4, n_layers)
            return [n_layers * (i + 1) // k for i in range(k)]
        if max(self.encoder_layers) > n_layers:
            raise ConfigError(f"encoder_layers: {self.encoder_layers} exceeds the encoder's {n_layers} layers")
        return list(self.encoder_layers)
