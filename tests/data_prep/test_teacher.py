"""data_prep.teacher: batched generation, per-row seeded sampling, stopping, backends."""

import pytest
import torch

from data_prep.teacher import FakeTeacher, Sampling, TeacherConfig, TransformersTeacher

from data_prep.teachers import load_teacher
from speech_adapter.errors import ConfigError

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PROMPTS = [[{"role": "user", "content": "Hi"}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe the clip, please."}],
           [{"role": "user", "content": "A much longer question so that left padding matters here."}]]


def tiny_tokenizer():
    """A byte-level tokenizer built in code (no files), with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|im_end|>": 0, "<|im_start|>": 1, "<pad>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_teacher(seed: int = 0, batch_size: int = 4) -> TransformersTeacher:
    """A random 2-layer Llama teacher (widths 32-64), built from a config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=0, pad_token_id=2, bos_token_id=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    return TransformersTeacher(model, tok, "tiny-llama", batch_size=batch_size)


def test_batched_greedy_equals_one_at_a_time():
    teacher = tiny_teacher(batch_size=3)
    s = Sampling(max_new_tokens=12)
    batched = teacher.generate(PROMPTS, 1, s)
    teacher.batch_size = 1
    single = [teacher.generate([p], 1, s)[0] for p in PROMPTS]
    assert batched == single
    assert all(isinstance(a[0], str) for a in batched) and any(a[0] for a in batched)


def test_sampling_is_seeded_per_row_not_per_batch():
    teacher = tiny_teacher(batch_size=3)
    s = Sampling(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=10, seed=7)
    together = teacher.generate(PROMPTS, 2, s, seeds=[11, 12, 13])
    alone = teacher.generate(PROMPTS[1:2], 2, s, seeds=[12])
    assert together[1] == alone[0]
    assert teacher.generate(PROMPTS, 2, s, seeds=[11, 12, 13]) == together
    assert together[0][0] != together[0][1] or together[2][0] != together[2][1]  # samples differ
    greedy = teacher.generate(PROMPTS, 1, Sampling(max_new_tokens=10))
    # top_p so small that only the most likely token survives: sampling reduces to greedy
    narrow = teacher.generate(PROMPTS, 1, Sampling(do_sample=True, top_p=1e-9, max_new_tokens=10), seeds=[1, 2, 3])
    assert narrow == greedy


def test_stops_at_end_of_turn():
    teacher = tiny_teacher()
    # make <|im_end|> (id 0) the argmax everywhere: zero hidden states give all-zero logits
    with torch.no_grad():
        teacher.model.model.norm.weight.zero_()
    lengths = []
    orig = teacher.model.generate

    def spy(**kw):
        out = orig(**kw)
        lengths.append(out.shape[1] - kw["input_ids"].shape[1])
        return out

    teacher.model.generate = spy
    assert teacher.generate(PROMPTS[:1], 1, Sampling(max_new_tokens=20)) == [[""]]
    assert lengths == [1]
    assert 0 in teacher.stop_ids


def test_greedy_with_n_above_one_is_refused():
    with pytest.raises(ValueError, match="do_sample"):
        tiny_teacher().generate(PROMPTS[:1], 2, Sampling(do_sample=False))


def test_vllm_backend_missing_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *a, **k):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("no vllm")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    import data_prep.teacher as T

    with pytest.raises(ConfigError, match=r"pip install 'speech-adapter\[vllm\]'"):
        T.VllmTeacher("/nonexistent", "x")


def test_teacher_config_validation_and_missing_gguf(tmp_path):
    from speech_adapter.errors import ModelNotFoundError

    with pytest.raises(ConfigError, match="backend"):
        TeacherConfig(backend="tgi").validate()
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        load_teacher(TeacherConfig(model=str(tmp_path / "absent.gguf")))


def test_fake_teacher_scripts_greedy_then_samples():
    fake = FakeTeacher({"rules": [{"contains": "gender", "answers": ["a", "b", "c"]}], "default": "d"})
    msgs = [[{"role": "user", "content": "the gender?"}], [{"role": "user", "content": "other"}]]
    assert fake.generate(msgs, 1, Sampling()) == [["a"], ["d"]]
    assert fake.generate(msgs[:1], 3, Sampling(do_sample=True)) == [["b", "c", "c"]]


def test_score_batched_with_padding_equals_one_full_forward_per_reply():
    teacher = tiny_teacher(batch_size=3)
    replies = [["Female.", "Male."], ["Yes", "No, not at all."], ["A"]]
    batched = teacher.score(PROMPTS, replies)
    tok = teacher.tokenizer
    for messages, options, scores in zip(PROMPTS, replies, batched):
        prompt = tok(teacher.format(messages), add_special_tokens=False)["input_ids"]
        for reply, got in zip(options, scores):
            ids = tok(reply, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = teacher.model(input_ids=torch.tensor([prompt + ids])).logits[0].log_softmax(-1)
            want = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(ids))
            assert got == pytest.approx(want, abs=1e-4)
    assert batched[0][0] != batched[0][1]  # a real ranking, not a constant


def test_fake_teacher_scores_the_option_its_prompt_names():
    fake = FakeTeacher({})
    msgs = [[{"role": "user", "content": "A female voice. What is the gender of the speaker?"}]]
    (scores,) = fake.score(msgs, [["Male.", "Female."]])
    assert scores[1] > scores[0]  # "male" is not matched inside "female"
