"""The tiny random-weight base models (`tiny:whisper`, `tiny:llm`): no files, no network.

A 2-layer Whisper (d=32) with its feature extractor and a byte-level tokenizer, and a 2-layer
Llama-style chat LLM (d=32) with a byte-level ChatML tokenizer built with `tokenizers`. The base
weights always come from a fixed seed (so `tiny:whisper` / `tiny:llm` refs rebuild identically
in `SpeechLM.build`). `models.tiny` builds a whole tiny SpeechLM from them.
"""

from __future__ import annotations

import torch

BASE_SEED = 1234
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _byte_tokenizer(special: list[str], **named):
    """A byte-level BPE tokenizer with no merges (any text encodes) plus `special` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


def tiny_llm_tokenizer():
    tok = _byte_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                          eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def tiny_llm(hidden: int = 32, layers: int = 2):
    """(LlamaForCausalLM, tokenizer) with random weights from a fixed seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_llm_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    with torch.random.fork_rng():
        torch.manual_seed(BASE_SEED)
        model = LlamaForCausalLM(cfg)
    return model.eval(), tok


def tiny_whisper(d_model: int = 32, layers: int = 2):
    """(WhisperForConditionalGeneration, WhisperFeatureExtractor, tokenizer), random weights."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]
    tok = _byte_tokenizer(specials, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    cfg = WhisperConfig(vocab_size=len(tok), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=2 * d_model,
                        decoder_ffn_dim=2 * d_model, num_mel_bins=80, max_source_positions=1500,
                        max_target_positions=64, pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"))
    with torch.random.fork_rng():
        torch.manual_seed(BASE_SEED)
        model = WhisperForConditionalGeneration(cfg)
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
    return model.eval(), fe, tok
