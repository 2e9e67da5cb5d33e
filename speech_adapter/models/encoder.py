"""Frozen Whisper encoder for variable-length audio, tapping several layers.

Ultravox's approach: the log-mel is computed for the real clip length (no padding to 30 s) and
the positional embeddings are sliced to the frame count, so cost grows with duration. We run the
encoder's own submodules (conv1, conv2, embed_positions, layers, layer_norm) instead of
`WhisperEncoder.forward`, which in transformers 5.x refuses any input that is not 3000 mel
frames; nothing in transformers is patched. Clips of different lengths in one batch are padded
to the batch max and padded frames are masked out of self-attention, so a clip's states do not
depend on its batch mates. DeSTA2 taps 4 evenly spaced layers; we return them all at once.

`transcribe` is plain greedy Whisper decoding (30 s padded input, as Whisper was trained).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from speech_adapter.errors import AudioError

SAMPLE_RATE = 16000


class AudioEncoder(nn.Module):
    """Runs `whisper_encoder` (a HF WhisperEncoder) on unpadded log-mels; returns tapped states.

    `layers` are 1-based; layer == n_layers gets Whisper's final LayerNorm (as its decoder sees).
    """

    def __init__(self, whisper_encoder, feature_extractor, layers: list[int]):
        super().__init__()
        self.whisper_encoder = whisper_encoder
        self.feature_extractor = feature_extractor
        self.layers = list(layers)
        self.n_layers = len(whisper_encoder.layers)
        self.dim = whisper_encoder.config.d_model
        self.max_frames = whisper_encoder.embed_positions.num_embeddings  # 1500 = 30 s
        self.hop = feature_extractor.hop_length  # 160 samples = 10 ms per mel frame
        stride = whisper_encoder.conv1.stride[0] * whisper_encoder.conv2.stride[0]  # 2
        self.mel_per_frame = stride
        self.frame_rate = SAMPLE_RATE / self.hop / stride  # 50 Hz

    # ---- lengths -------------------------------------------------------------------------
    def mel_length(self, num_samples: int) -> int:
        """Mel frames the feature extractor yields for `num_samples` (center STFT, last dropped)."""
        return num_samples // self.hop

    def output_length(self, mel_frames):
        """Encoder frames for `mel_frames` mel frames (conv2 has stride 2, padding 1)."""
        return (mel_frames - 1) // self.mel_per_frame + 1

    def max_samples(self) -> int:
        return self.max_frames * self.mel_per_frame * self.hop

    # ---- features ------------------------------------------------------------------------
    def features(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel of each clip at its own length, zero-padded to the batch max.

        Returns (features (A, n_mels, F_max), mel_lengths (A,)). Raises AudioError for a clip
        that is empty or longer than Whisper's 30 s window (chunk it with audio.chunk_audio).
        """
        feats, lens = [], []
        for i, w in enumerate(waveforms):
            w = np.asarray(w, dtype=np.float32).reshape(-1)
            if w.size < self.hop * 2:
                raise AudioError(f"clip {i}", f"too short for the encoder ({w.size} samples)")
            if w.size > self.max_samples():
                raise AudioError(f"clip {i}", f"{w.size / SAMPLE_RATE:.1f} s is longer than the encoder's "
                                 f"{self.max_samples() / SAMPLE_RATE:.0f} s window; chunk it with "
                                 "speech_adapter.audio.chunk_audio")
            f = self.feature_extractor(w, sampling_rate=SAMPLE_RATE, padding="longest",
                                       return_tensors="pt").input_features[0]  # (n_mels, F_i)
            n = self.mel_length(w.size)
            feats.append(f[:, :n])
            lens.append(n)
        f_max = max(lens)
        out = torch.zeros(len(feats), feats[0].shape[0], f_max)  # (A, n_mels, F_max)
        for i, f in enumerate(feats):
            out[i, :, : f.shape[1]] = f
        return out, torch.tensor(lens, dtype=torch.long)

    # ---- encoder -------------------------------------------------------------------------
    def forward(self, features: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (A, n_mels, F), mel_lengths (A,)) -> (states (A, L, T, D), lengths (A,))."""
        enc = self.whisper_encoder
        dtype = enc.conv1.weight.dtype
        x = features.to(device=enc.conv1.weight.device, dtype=dtype)
        mel_lengths = mel_lengths.to(x.device)
        lengths = self.output_length(mel_lengths)  # (A,)
        if int(lengths.max()) > self.max_frames:
            raise AudioError("batch", f"input of {int(mel_lengths.max())} mel frames exceeds the encoder window")
        f = x.shape[-1]
        mel_mask = (torch.arange(f, device=x.device)[None] < mel_lengths[:, None]).to(dtype)  # (A, F)
        # zero padded mel frames and conv1 outputs so a clip's edge sees exactly the zero padding
        # it would see alone
        x = nn.functional.gelu(enc.conv1(x * mel_mask[:, None]))  # (A, D, F)
        x = nn.functional.gelu(enc.conv2(x * mel_mask[:, None]))  # (A, D, T)
        x = x.permute(0, 2, 1)  # (A, T, D)
        t = x.shape[1]
        h = x + enc.embed_positions.weight[:t].to(dtype)  # slice positions: no 30 s padding
        valid = torch.arange(t, device=x.device)[None] < lengths[:, None]  # (A, T)
        mask = None
        if not bool(valid.all()):
            # additive key-padding mask (A, 1, T, T): padded frames are never attended to
            mask = torch.zeros(valid.shape[0], 1, t, t, dtype=dtype, device=x.device)
            mask.masked_fill_(~valid[:, None, None, :], torch.finfo(dtype).min)
        taps = []
        for i, layer in enumerate(enc.layers[: max(self.layers)], start=1):
            h = layer(h, mask)
            if i in self.layers:
                taps.append(enc.layer_norm(h) if i == self.n_layers else h)
        states = torch.stack(taps, dim=1)  # (A, L, T, D)
        states = states * valid[:, None, :, None].to(states.dtype)  # zero padded frames
        return states, lengths

    def encode(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (16 kHz float32) -> (states (A, L, T, D), lengths (A,))."""
        feats, mel_lengths = self.features(waveforms)
        return self(feats, mel_lengths)


def _decoder_prompt(tokenizer, multilingual: bool) -> list[int]:
    names = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if multilingual else []) + ["<|notimestamps|>"]
    ids = tokenizer.convert_tokens_to_ids(names)
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the Whisper tokenizer lacks one of {names}")
    return ids


@torch.no_grad()
def transcribe(whisper, feature_extractor, tokenizer, waveforms, batch_size: int = 8,
               max_new_tokens: int = 128, language_tokens: bool | None = None) -> list[str]:
    """Greedy Whisper transcripts of 16 kHz clips (each padded to 30 s, as Whisper was trained).

    The decoder prompt is <|startoftranscript|><|notimestamps|> for English-only models
    (+ <|en|><|transcribe|> for multilingual ones); decoding stops at <|endoftext|>.
    """
    from tqdm import tqdm

    if language_tokens is None:
        language_tokens = bool(getattr(whisper.config, "vocab_size", 0) >= 51865)
    prompt = _decoder_prompt(tokenizer, language_tokens)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    device = next(whisper.parameters()).device
    dtype = next(whisper.parameters()).dtype
    max_new = min(max_new_tokens, whisper.config.max_target_positions - len(prompt))
    out: list[str] = []
    waveforms = list(waveforms)
    for start in tqdm(range(0, len(waveforms), batch_size), desc="transcribe",
                      disable=len(waveforms) <= batch_size):
        chunk = [np.asarray(w, dtype=np.float32) for w in waveforms[start:start + batch_size]]
        feats = feature_extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        enc = whisper.model.encoder(feats.to(device, dtype)).last_hidden_state  # (B, 1500, D)
        ids = torch.tensor([prompt] * len(chunk), device=device)  # (B, P)
        done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
        gen = []
        cache = None
        step_ids = ids
        for _ in range(max_new):
            o = whisper.model.decoder(input_ids=step_ids, encoder_hidden_states=enc,
                                      cache=cache, use_cache=True)
            cache = o.cache
            nxt = whisper.proj_out(o.last_hidden_state[:, -1]).argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, eot), nxt)
            gen.append(nxt)
            done |= nxt == eot
            if bool(done.all()):
                break
            step_ids = nxt[:, None]
        toks = torch.stack(gen, 1).tolist() if gen else [[] for _ in chunk]
        for row in toks:
            row = row[: row.index(eot)] if eot in row else row
            out.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return out
