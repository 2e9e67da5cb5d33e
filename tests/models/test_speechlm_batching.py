"""models/speechlm.py on tiny models: splicing, masking, batch independence, save/load, generate."""

import dataclasses

import numpy as np
import pytest
import torch

from speech_adapter.errors import ConfigError
from speech_adapter.models.adapter_dir import read_config as read_adapter_config
from speech_adapter.models.processor import IGNORE
from speech_adapter.models.speechlm import MIN_SHARED_PREFIX, SpeechLM
from speech_adapter.models.tiny import tiny_speechlm

KINDS = ["qformer", "window_qformer", "stack_mlp"]


def _clip(seconds, seed):
    return (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)


def _examples():
    return [
        {"audio": _clip(1.0, 0), "instruction": "What can you hear?", "response": "A voice."},
        {"audio": None, "instruction": "Say hi", "response": "Hi!", "system": "Be brief."},
        {"audio": _clip(0.44, 1), "instruction": "Gender?", "response": "Female speaker."},
        {"audio": _clip(1.7, 2), "instruction": "Speed?", "response": "Fast", "description": "d"},
    ]


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return tiny_speechlm(request.param)


def test_only_adapter_has_gradients(model):
    names = {k for k, p in model.named_parameters() if p.requires_grad}
    assert names and all(k.startswith("adapter.") for k in names)
    out = model.all_logits(model.processor.collate(_examples()))
    out.loss.backward()
    for k, p in model.named_parameters():
        if k.startswith("adapter."):
            assert p.grad is not None, k
        else:
            assert p.grad is None, k
    model.zero_grad(set_to_none=True)


def test_lora_parameters_train_too():
    m = tiny_speechlm("stack_mlp", lora=True)
    names = [k for k, p in m.named_parameters() if p.requires_grad]
    assert any("lora_" in k for k in names) and all(k.startswith("adapter.") or "lora_" in k for k in names)
    batch = m.processor.collate(_examples())
    with torch.no_grad():
        torch.testing.assert_close(m(batch).loss, m.all_logits(batch).loss)
    m.all_logits(batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for k, p in m.named_parameters() if "lora_B" in k)
    buffers = {"adapter.feature_norm.mean", "adapter.feature_norm.std"}  # fitted statistics, not trained
    assert set(m.trainable_state_dict()) == set(names) | buffers


def test_llm_sees_exactly_the_adapter_outputs_at_placeholders(model):
    exs = _examples()
    batch = model.processor.collate(exs)
    seen = {}
    body = getattr(model.causal_lm, model.causal_lm.base_model_prefix)
    h = body.register_forward_pre_hook(lambda mod, a, kw: seen.update(embeds=kw["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            model.all_logits(batch)
            states, lengths = model.encode_audio(batch)
            audio, n_tok = model.adapter(states, lengths)
    finally:
        h.remove()
    is_ph = batch["input_ids"] == model.placeholder_id
    for a, row in enumerate(batch["audio_rows"].tolist()):
        got = seen["embeds"][row][is_ph[row]]
        assert got.shape[0] == int(n_tok[a]) == model.processor.num_audio_tokens(len(exs[row]["audio"]))
        torch.testing.assert_close(got, audio[a, : int(n_tok[a])])
    assert not is_ph[1].any()  # the text-only row has no audio tokens
    emb = model.causal_lm.get_input_embeddings()
    torch.testing.assert_close(seen["embeds"][~is_ph], emb(batch["input_ids"][~is_ph]))


def test_labels_cover_only_response_and_end_of_turn(model):
    exs = _examples()
    batch = model.processor.collate(exs)
    tok = model.tokenizer
    for i, ex in enumerate(exs):
        lab = batch["labels"][i]
        kept = lab[lab != IGNORE].tolist()
        assert kept == tok(ex["response"], add_special_tokens=False).input_ids + [model.eot_id]
        first = int((lab != IGNORE).nonzero()[0])
        n_ph = int((batch["input_ids"][i, :first] == model.placeholder_id).sum())
        assert n_ph == (0 if ex["audio"] is None else model.processor.num_audio_tokens(len(ex["audio"])))
        assert (batch["input_ids"][i][lab != IGNORE] != model.placeholder_id).all()
    assert model.eot_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_logits_alone_equal_logits_in_a_mixed_padded_batch(model):
    exs = _examples()
    with torch.no_grad():
        batch = model.processor.collate(exs)
        together = model.all_logits(batch)
        for i, ex in enumerate(exs):
            alone = model.all_logits(model.processor.collate([ex]))
            n = alone.logits.shape[1]
            torch.testing.assert_close(together.logits[i, :n], alone.logits[0], atol=1e-4, rtol=1e-4)
            assert (batch["labels"][i, n:] == IGNORE).all()


def test_target_logits_match_full_logits_and_loss(model):
    batch = model.processor.collate(_examples())
    with torch.no_grad():
        full = model.all_logits(batch)
        tgt = model(batch)
    mask = batch["labels"][:, 1:] != IGNORE
    torch.testing.assert_close(tgt.logits, full.logits[:, :-1][mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(tgt.labels, batch["labels"][:, 1:][mask])
    torch.testing.assert_close(tgt.loss, full.loss)


def test_text_mode_targets_line_up_with_audio_mode(model):
    exs = _examples()
    a, t = model.processor.collate(exs, mode="audio"), model.processor.collate(exs, mode="text")
    assert "input_features" not in t and not (t["input_ids"] == model.placeholder_id).any()
    assert torch.equal(a["labels"][a["labels"] != IGNORE], t["labels"][t["labels"] != IGNORE])
    assert "d" in model.tokenizer.decode(t["input_ids"][3])


def test_precomputed_encoder_states_give_the_same_loss(model):
    batch = model.processor.collate(_examples())
    with torch.no_grad():
        cached = model.encode_audio(batch)
        torch.testing.assert_close(model.all_logits(batch, encoder_states=cached).loss, model.all_logits(batch).loss)
        states, lengths = cached
        if model.config.adapter.kind != "qformer":  # qformer: fixed tokens, any length fits
            with pytest.raises(ConfigError, match="do not match"):
                model.all_logits(batch, encoder_states=(states[:, :, :10], lengths.clamp(max=10)))


@pytest.mark.parametrize("kind, lora", [("qformer", False), ("window_qformer", False), ("stack_mlp", True)])
def test_save_then_load_gives_identical_outputs(tmp_path, kind, lora):
    trained = tiny_speechlm(kind, lora=lora, seed=1)
    with torch.no_grad():  # make LoRA B non-zero so it matters
        for k, p in trained.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    batch = trained.processor.collate(_examples())
    with torch.no_grad():
        ref = trained.all_logits(batch).logits
    trained.save_adapter(tmp_path / "ck")
    trained.save_adapter(tmp_path / "ck")  # overwriting an existing dir works
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == sorted(
        ["adapter_model.safetensors", "adapter_config.json"] + (["lora"] if lora else []))
    assert (tmp_path / "ck" / "lora" / "adapter_model.safetensors").exists() == lora
    fresh = tiny_speechlm(kind, lora=lora, seed=2)
    with torch.no_grad():
        assert not torch.allclose(fresh.all_logits(batch).logits, ref)
        fresh.load_adapter(tmp_path / "ck")
        torch.testing.assert_close(fresh.all_logits(batch).logits, ref)
        again = SpeechLM.from_pretrained(tmp_path / "ck")
        torch.testing.assert_close(again.all_logits(again.processor.collate(_examples())).logits, ref)
    assert read_adapter_config(tmp_path / "ck").adapter.kind == kind


def test_load_refuses_a_different_adapter(tmp_path):
    tiny_speechlm("qformer").save_adapter(tmp_path)
    with pytest.raises(ConfigError, match="adapter config"):
        tiny_speechlm("stack_mlp").load_adapter(tmp_path)


def test_generate_with_audio_batched_equals_alone(model):
    exs = _examples()
    together = model.generate(exs, max_new_tokens=6)
    assert len(together) == 4 and all(isinstance(t, str) for t in together)
    for i, ex in enumerate(exs):
        assert model.generate([ex], max_new_tokens=6) == [together[i]]
    s1 = model.generate(exs[:2], max_new_tokens=4, do_sample=True, temperature=0.8, top_p=0.9, seed=3)
    assert s1 == model.generate(exs[:2], max_new_tokens=4, do_sample=True, temperature=0.8, top_p=0.9, seed=3)


def test_repetition_penalty_breaks_repeats_and_one_is_plain_greedy(model):
    exs = _examples()[:2]
    ids = lambda **kw: torch.stack(list(model.stream(
        model.processor.collate([{**e, "response": None} for e in exs], "audio", padding="left"), 24, **kw)), 1)
    plain, greedy = ids(repetition_penalty=1.0), ids(repetition_penalty=1.0)
    assert torch.equal(plain, greedy)
    assert any(len(set(r.tolist())) < len(r) for r in plain)  # a random tiny LLM repeats itself
    # a huge penalty: no token twice in a reply (a finished row repeats the pad id, so stop there)
    for row in ids(repetition_penalty=1e6).tolist():
        reply = row[: row.index(model.pad_id)] if model.pad_id in row else row
        assert len(set(reply)) == len(reply), reply


def test_use_transcript_puts_whisper_text_in_the_prompt():
    m = tiny_speechlm("stack_mlp")
    m.config.use_transcript = True
    ex = {"audio": _clip(0.5, 0), "instruction": "What?", "transcript": "hello there"}
    text = m.tokenizer.decode(m.processor.collate([ex])["input_ids"][0])
    assert "hello there" in text
    batch = m.processor.collate([{**ex, "transcript": None}])  # falls back to (tiny) Whisper decoding
    assert batch["input_ids"].shape[0] == 1


def test_the_transcript_line_is_configurable_and_old_adapters_keep_theirs(tmp_path):
    """The transcript sits on `transcript_line` (the cascade's line is one choice); an adapter saved
    before the option existed loads with the quoted line it was trained on."""
    import json

    from speech_adapter.prompts import CASCADE_TRANSCRIPT_LINE, LEGACY_TRANSCRIPT_LINE, cascade_user_message

    m = tiny_speechlm("stack_mlp")
    m.config.use_transcript = True
    ex = {"audio": _clip(0.5, 0), "instruction": "What?"}
    assert 'I heard someone say: "hello there"\n' in m.processor.user_message(ex, "audio", "hello there")
    m.config.transcript_line = CASCADE_TRANSCRIPT_LINE
    user = m.processor.user_message(ex, "audio", "hello there")
    assert cascade_user_message("hello there", "What?").endswith(user.split("\n", 2)[2])
    m.save_adapter(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert read_adapter_config(tmp_path).transcript_line == cfg["model"]["transcript_line"] == CASCADE_TRANSCRIPT_LINE
    assert "Transcript of the audio: hello there" in SpeechLM.from_pretrained(tmp_path).processor.user_message(
        ex, "audio", "hello there")
    del cfg["model"]["transcript_line"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    old = SpeechLM.from_pretrained(tmp_path)
    old.config.use_transcript = True
    assert old.config.transcript_line == LEGACY_TRANSCRIPT_LINE
    assert 'I heard someone say: "hello there"' in old.processor.user_message(ex, "audio", "hello there")
    with pytest.raises(ConfigError, match="transcript_line"):
        dataclasses.replace(m.config, transcript_line="no slot here").validate()


def test_train_mode_keeps_frozen_parts_in_eval():
    m = tiny_speechlm("qformer").train()
    assert m.adapter.training and not m.whisper.training and not m.llm.training
    assert tiny_speechlm("qformer", lora=True).train().llm.training


def test_bfloat16_backbone_with_fp32_adapter(tmp_path):
    from speech_adapter.models.tiny import tiny_config

    cfg = tiny_config("stack_mlp")
    cfg.dtype = "bfloat16"
    m = SpeechLM.build(cfg)
    assert m.causal_lm.dtype == torch.bfloat16 and next(m.adapter.parameters()).dtype == torch.float32
    out = m.all_logits(m.processor.collate(_examples()))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in m.adapter.parameters())


@pytest.mark.parametrize("kind", ["window_qformer", "stack_mlp"])
def test_a_clip_over_30s_gets_tokens_for_its_whole_length(kind):
    m = tiny_speechlm(kind)
    ex = {"audio": _clip(31.0, 5), "instruction": "Summarize.", "response": "ok"}
    batch = m.processor.collate([ex, _examples()[0]])
    n = int((batch["input_ids"][0] == m.placeholder_id).sum())
    assert n == m.processor.num_audio_tokens(31 * 16000) > m.processor.num_audio_tokens(30 * 16000)
    with torch.no_grad():
        assert torch.isfinite(m.all_logits(batch).loss)


@pytest.mark.parametrize("bad, match", [
    ({"audio": None}, "missing key 'instruction'"),
    ({"audio": None, "instruction": "x", "response": 3}, "'response' must be a string"),
    ({"audio": np.zeros((2, 16000), np.float32), "instruction": "x"}, "1-D"),
])
def test_malformed_examples_name_the_key(bad, match):
    from speech_adapter.errors import DataError

    with pytest.raises(DataError, match=f"example 1: .*{match}" if match != "1-D" else match):
        tiny_speechlm("stack_mlp").processor.collate([_examples()[1], bad])


def test_lora_targets_missing_from_the_llm_are_a_config_error():
    from speech_adapter.models.tiny import tiny_config, tiny_llm, tiny_whisper

    cfg = tiny_config("stack_mlp", lora=True)
    cfg.lora.target_modules = ["nonexistent_proj"]
    w, fe, _ = tiny_whisper()
    llm, tok = tiny_llm()
    with pytest.raises(ConfigError, match="lora.target_modules"):
        SpeechLM(cfg, w, fe, llm, tok)


def test_shared_prompt_prefix_runs_once_and_changes_nothing():
    """forward runs the rows' common system-prompt prefix once for the batch;
    loss, target logits and adapter gradients equal those of the plain forward."""
    m = tiny_speechlm("qformer")
    system = "You are a helpful assistant who can hear audio and answers in a few words."
    exs = [dict(ex, system=system) for ex in _examples()]
    batch = m.processor.collate(exs)
    n = m._shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
    first_audio = int((batch["input_ids"][0] == m.placeholder_id).nonzero()[0])
    assert MIN_SHARED_PREFIX <= n <= first_audio
    calls = []
    hook = m._forward_after_prefix
    m._forward_after_prefix = lambda *a: calls.append(a[-1]) or hook(*a)
    shared = m(batch)
    shared.loss.backward()
    g_shared = {k: p.grad.clone() for k, p in m.named_parameters() if p.requires_grad}
    m.zero_grad(set_to_none=True)
    assert calls == [n]
    m.share_prefix = False  # the plain forward
    plain = m(batch)
    plain.loss.backward()
    torch.testing.assert_close(shared.logits, plain.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(shared.labels, plain.labels)
    for k, p in m.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(g_shared[k], p.grad, atol=1e-6, rtol=1e-4)


def test_no_prefix_sharing_with_lora_or_a_single_row():
    m = tiny_speechlm("stack_mlp", lora=True)  # LoRA changes the prefix's keys: never shared
    batch = m.processor.collate([dict(ex, system="A shared system prompt of some length here.") for ex in _examples()])
    assert m._shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"]) == 0
    m = tiny_speechlm("qformer")
    one = m.processor.collate([dict(_examples()[0], system="A shared system prompt of some length here.")])
    assert m._shared_prefix_length(one["input_ids"], one["attention_mask"], one["labels"]) == 0


def test_output_norm_starts_at_the_llm_embedding_rms_and_old_configs_load_without_it(tmp_path):
    import json

    m = tiny_speechlm("qformer")
    emb = m.causal_lm.get_input_embeddings().weight
    torch.testing.assert_close(m.adapter.output_norm.weight,
                               torch.full_like(m.adapter.output_norm.weight, float(emb.pow(2).mean().sqrt())))
    m.save_adapter(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["model"]["adapter"]["output_norm"] is True
    del cfg["model"]["adapter"]["output_norm"], cfg["model"]["adapter"]["feature_norm"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    old = read_adapter_config(tmp_path).adapter  # an adapter saved before either option existed
    assert old.output_norm is False and old.feature_norm is False


def test_an_adapter_dir_with_the_old_weights_name_still_loads(tmp_path):
    """Dirs written before one file name was used everywhere hold adapter.safetensors; a rewrite
    leaves only adapter_model.safetensors."""
    m = tiny_speechlm("stack_mlp", seed=1)
    m.save_adapter(tmp_path)
    (tmp_path / "adapter_model.safetensors").rename(tmp_path / "adapter.safetensors")
    batch = m.processor.collate(_examples())
    again = SpeechLM.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again.all_logits(batch).logits, m.all_logits(batch).logits)
    again.save_adapter(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_greedy_drops_finished_rows_and_replies_stay_those_of_each_row_alone(monkeypatch):
    """A row that ends leaves the batch (its cache rows too); the others' replies do not change."""
    model = tiny_speechlm("stack_mlp")
    exs = [{**e, "response": None} for e in _examples()]
    steps = lambda batch: torch.stack(list(model.stream(batch, 10, repetition_penalty=1.0)), 1)
    first = steps(model.processor.collate(exs, "audio", padding="left"))
    # a token some rows emit before others becomes a stop token: rows end at different steps
    rows = first.tolist()
    at = lambda t: [r.index(t) if t in r else len(r) for r in rows]
    token = next((t for t in sorted(set(first.flatten().tolist())) if len(set(at(t))) > 1 and min(at(t)) < 8), None)
    assert token is not None, first
    monkeypatch.setattr(model.processor, "stop_ids", list(model.processor.stop_ids) + [token])
    widths = []
    hook = model.causal_lm.register_forward_pre_hook(
        lambda mod, args, kwargs: widths.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        together = model.generate(exs, max_new_tokens=10, repetition_penalty=1.3)
    finally:
        hook.remove()
    assert widths[0] == 4 and min(widths) < 4  # rows left the batch as they finished
    for i, ex in enumerate(exs):
        assert model.generate([ex], max_new_tokens=10, repetition_penalty=1.3) == [together[i]]
