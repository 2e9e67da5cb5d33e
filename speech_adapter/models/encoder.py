"""Frozen Whisper encoder for variable-length audio, tapping several layers.

Ultravox's approach: the log-mel is computed for the real clip length (no padding to 30 s) and
the positional embeddings are sliced to the frame count, so cost grows with duration. We run the
encoder's own submodules (conv1, conv2, embed_positions, layers, layer_norm) instead of
`WhisperEncoder.forward`, which in transformers 5.x refuses any input that is not 3000 mel
frames; nothing in transformers is patched. Clips of different lengths in one batch are padded
to the batch max and padded frames are masked out of self-attention, so a clip's states do not
depend on its batch mates. Clips over 30 s are encoded in 30 s windows and joined (Ultravox).
DeSTA2 taps 4 evenly spaced layers; we return them all at once.

With `voice=True` (model.voice_features) a pitch track rides along: librosa's pyin reads each
clip's F0 and voicing probability at the mel hop, appended to the log-mel as two more rows, and
after the encoder, averaged to its 50 Hz frames, appended to every tapped layer's states as two
more channels (octaves above 150 Hz, voicing 0..1): on voices it never trained on, a speaker's
pitch tells gender more reliably than a linear probe of Whisper's averaged states does (README,
`scripts/encoder_probe.py`).

`transcribe` is plain greedy Whisper decoding (30 s padded input, as Whisper was trained).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from speech_adapter.audio import MAX_AUDIO_SECONDS, SAMPLE_RATE
from speech_adapter.errors import AudioError

PITCH_CHANNELS = 2  # log2(F0 / PITCH_REF_HZ), voicing probability
PITCH_REF_HZ = 150.0  # between typical men's (~120 Hz) and women's (~200 Hz) speaking pitch
PITCH_RANGE_HZ = (60.0, 500.0)


def pitch_track(wave: np.ndarray, hop: int, n_frames: int) -> np.ndarray:
    """(2, n_frames): pyin's F0 as octaves above PITCH_REF_HZ (its best guess where unvoiced)
    and its voicing probability, one column per `hop` samples (frame i centred at i * hop, as
    Whisper's log-mel frames are)."""
    import librosa  # lazy: numba compiles pyin once per process (cached on disk by setup)

    x = np.asarray(wave, dtype=np.float32)
    if x.size < 2048:
        x = np.pad(x, (0, 2048 - x.size))
    f0, _, prob = librosa.pyin(x, fmin=PITCH_RANGE_HZ[0], fmax=PITCH_RANGE_HZ[1], sr=SAMPLE_RATE,
                               frame_length=1024, hop_length=hop, center=True, resolution=0.25, fill_na=None)
    out = np.zeros((PITCH_CHANNELS, n_frames), dtype=np.float32)
    n = min(n_frames, f0.size)
    f0 = np.nan_to_num(f0[:n], nan=PITCH_REF_HZ)
    out[0, :n] = np.log2(np.clip(f0, *PITCH_RANGE_HZ) / PITCH_REF_HZ)
    out[1, :n] = np.nan_to_num(prob[:n], nan=0.0)
    return out


class AudioEncoder(nn.Module):
    """Runs `whisper_encoder` (a HF WhisperEncoder) on unpadded log-mels; returns tapped states.

    `layers` are 1-based; layer == n_layers gets Whisper's final LayerNorm (as its decoder sees).
    Clips longer than Whisper's 30 s window are cut into 30 s windows encoded on their own and
    concatenated along time (Ultravox); clips above `max_seconds` are refused. `voice`: append
    the pitch track's two channels to the states (`dim` counts them).
    """

    def __init__(self, whisper_encoder, feature_extractor, layers: list[int], max_seconds: float = MAX_AUDIO_SECONDS,
                 voice: bool = False):
        super().__init__()
        self.whisper_encoder = whisper_encoder
        self.feature_extractor = feature_extractor
        self.layers = list(layers)
        self.max_seconds = max_seconds
        self.voice = voice
        self.n_layers = len(whisper_encoder.layers)
        self.dim = whisper_encoder.config.d_model + (PITCH_CHANNELS if voice else 0)
        self.max_frames = whisper_encoder.embed_positions.num_embeddings  # 1500 = 30 s
        self.hop = feature_extractor.hop_length  # 160 samples = 10 ms per mel frame
        self.mel_per_frame = whisper_encoder.conv1.stride[0] * whisper_encoder.conv2.stride[0]  # 2
        self.window_mels = self.max_frames * self.mel_per_frame  # 3000
        self.frame_rate = SAMPLE_RATE / self.hop / self.mel_per_frame  # 50 Hz

    # ---- lengths -------------------------------------------------------------------------
    def mel_length(self, num_samples: int) -> int:
        """Mel frames the feature extractor yields for `num_samples` (center STFT, last dropped)."""
        return num_samples // self.hop

    def output_length(self, mel_frames):
        """Encoder frames for `mel_frames` mel frames: full 30 s windows give 1500 each, the
        remainder (m - 1) // 2 + 1 (conv2 has stride 2, padding 1). Works on ints and tensors."""
        full, rest = mel_frames // self.window_mels, mel_frames % self.window_mels
        tail = (rest - 1) // self.mel_per_frame + 1
        tail = tail * (rest > 0) if torch.is_tensor(rest) else (tail if rest > 0 else 0)
        return full * self.max_frames + tail

    # ---- features ------------------------------------------------------------------------
    def features(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel of each clip at its own length, zero-padded to the batch max (with `voice`, the
        pitch track's rows below the mel rows).

        Returns (features (A, n_mels [+ 2], F_max), mel_lengths (A,)). Raises AudioError for a
        clip that is too short or longer than `max_seconds`.
        """
        feats, lens = [], []
        for i, w in enumerate(waveforms):
            w = np.asarray(w, dtype=np.float32).reshape(-1)
            if w.size < self.hop * 2:
                raise AudioError(f"clip {i}", f"too short for the encoder ({w.size} samples)")
            if w.size > self.max_seconds * SAMPLE_RATE:
                raise AudioError(f"clip {i}", f"{w.size / SAMPLE_RATE:.1f} s is longer than max_audio_seconds="
                                 f"{self.max_seconds:g}; chunk it with speech_adapter.audio.chunk_audio")
            f = self.feature_extractor(w, sampling_rate=SAMPLE_RATE, padding="longest", truncation=False,
                                       return_tensors="pt").input_features[0]  # (n_mels, F_i)
            n = self.mel_length(w.size)
            f = f[:, :n]
            if self.voice:
                f = torch.cat([f, torch.from_numpy(pitch_track(w, self.hop, n)).to(f.dtype)])
            feats.append(f)
            lens.append(n)
        f_max = max(lens)
        out = torch.zeros(len(feats), feats[0].shape[0], f_max)  # (A, n_mels, F_max)
        for i, f in enumerate(feats):
            out[i, :, : f.shape[1]] = f
        return out, torch.tensor(lens, dtype=torch.long)

    # ---- encoder -------------------------------------------------------------------------
    def forward(self, features: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (A, n_mels, F), mel_lengths (A,)) -> (states (A, L, T, D), lengths (A,))."""
        mel_lengths = mel_lengths.cpu()
        if int(mel_lengths.max()) <= self.window_mels:
            return self._encode_window(features[..., : int(mel_lengths.max())], mel_lengths)
        # long clips: cut every clip into 30 s windows, encode them as one batch, re-join in order
        w = self.window_mels
        pieces, piece_lens, owner = [], [], []
        for a, m in enumerate(mel_lengths.tolist()):
            for start in range(0, m, w):
                pieces.append(features[a, :, start:start + w])  # (n_mels, <= W)
                piece_lens.append(min(w, m - start))
                owner.append(a)
        x = features.new_zeros(len(pieces), features.shape[1], max(piece_lens))  # (C, n_mels, W)
        for c, p in enumerate(pieces):
            x[c, :, : p.shape[1]] = p
        st, ln = self._encode_window(x, torch.tensor(piece_lens))  # (C, L, ≤1500, D), (C,)
        lengths = self.output_length(mel_lengths).to(ln.device)  # (A,)
        states = st.new_zeros(len(mel_lengths), st.shape[1], int(lengths.max()), st.shape[3])  # (A, L, T, D)
        fill = [0] * len(mel_lengths)
        for c, a in enumerate(owner):
            n = int(ln[c])
            states[a, :, fill[a]: fill[a] + n] = st[c, :, :n]
            fill[a] += n
        return states, lengths

    def _encode_window(self, features, mel_lengths):
        """One Whisper window per row: (A, n_mels [+ 2], F ≤ 3000), (A,) -> (A, L, T, D), (A,)."""
        enc = self.whisper_encoder
        dtype = enc.conv1.weight.dtype
        x = features.to(device=enc.conv1.weight.device, dtype=dtype)
        pitch = None
        if self.voice:
            x, pitch = x[:, :-PITCH_CHANNELS], x[:, -PITCH_CHANNELS:]  # (A, n_mels, F), (A, 2, F)
        mel_lengths = mel_lengths.to(x.device)
        lengths = self.output_length(mel_lengths)  # (A,)
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
        if pitch is not None:  # mel frames 2t, 2t+1 -> encoder frame t, as conv2's stride 2 pairs them
            pitch = nn.functional.pad(pitch, (0, 2 * t - f)).unflatten(-1, (t, 2)).mean(-1)  # (A, 2, T)
            pitch = pitch.transpose(1, 2)[:, None].expand(-1, states.shape[1], -1, -1)  # (A, L, T, 2)
            states = torch.cat([states, pitch.to(states.dtype)], dim=-1)  # (A, L, T, D + 2)
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
               max_new_tokens: int = 128, language_tokens: bool | None = None,
               quiet: bool | None = None) -> list[str]:
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
                      disable=len(waveforms) <= batch_size if quiet is None else quiet):
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
