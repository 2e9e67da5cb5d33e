"""models/adapters.py: one interface, three kinds; token counts; batch independence."""

import pytest
import torch

from speech_adapter.models.adapters import build_adapter
from speech_adapter.models.config import AdapterConfig

D, L, H = 16, 3, 24
SMALL = dict(num_queries=5, qformer_layers=1, qformer_heads=4, stack_factor=4, mlp_hidden=32,
             window_seconds=0.2, queries_per_window=2)
KINDS = ["qformer", "window_qformer", "stack_mlp"]


def _adapter(kind, **kw):
    torch.manual_seed(0)
    return build_adapter(AdapterConfig(kind=kind, **{**SMALL, **kw}), D, L, H).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_token_counts(kind):
    ad = _adapter(kind)
    lengths = torch.tensor([50, 23])
    states = torch.randn(2, L, 50, D)
    out, n = ad(states, lengths)
    assert out.shape == (2, int(n.max()), H)
    assert torch.equal(n, ad.num_tokens(lengths))
    expected = {"qformer": [5, 5], "window_qformer": [10, 6], "stack_mlp": [13, 6]}[kind]
    assert n.tolist() == expected


@pytest.mark.parametrize("kind", KINDS)
def test_output_of_a_clip_does_not_depend_on_its_batch(kind):
    ad = _adapter(kind)
    a, b = torch.randn(1, L, 37, D), torch.randn(1, L, 50, D)
    batch = torch.zeros(2, L, 50, D)
    batch[0, :, :37] = a[0]
    batch[0, :, 37:] = 123.0  # garbage in padded frames must not leak
    batch[1] = b[0]
    with torch.no_grad():
        out, n = ad(batch, torch.tensor([37, 50]))
        alone, n1 = ad(a, torch.tensor([37]))
    k = int(n1[0])
    torch.testing.assert_close(out[0, :k], alone[0, :k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["window_qformer", "stack_mlp"])
def test_tokens_grow_with_duration(kind):
    ad = _adapter(kind)
    counts = ad.num_tokens(torch.tensor([10, 100, 1000])).tolist()
    assert counts[0] < counts[1] < counts[2]


@pytest.mark.parametrize("pool", ["weighted", "mean", "last"])
def test_stack_mlp_layer_pools_run_and_differ(pool):
    states = torch.randn(1, L, 16, D)
    out, _ = _adapter("stack_mlp", layer_pool=pool)(states, torch.tensor([16]))
    assert torch.isfinite(out).all()
    if pool == "last":  # only the last tap matters
        s2 = states.clone()
        s2[:, 0] += 5
        torch.testing.assert_close(_adapter("stack_mlp", layer_pool=pool)(s2, torch.tensor([16]))[0], out)


# ---- feature standardization (FeatureNorm) ---------------------------------------------------


def _scaled_states(b=3, t=40):
    """States whose channels differ in scale and offset as Whisper's do (std 0.1 to 6)."""
    torch.manual_seed(1)
    scale = torch.logspace(-1, 0.8, D)  # (D,)
    offset = torch.linspace(-7, 7, D)
    return torch.randn(b, L, t, D) * scale + offset


def test_feature_norm_fit_standardizes_valid_frames_only():
    from speech_adapter.models.adapters import FeatureNorm

    states, lengths = _scaled_states(), torch.tensor([40, 25, 10])
    states[1, :, 25:] = 1e4  # padded frames must not enter the statistics
    states[2, :, 10:] = -1e4
    norm = FeatureNorm(L, D)
    assert torch.equal(norm(states), states)  # identity before fitting
    frames = norm.fit([(states[:2], lengths[:2]), (states[2:], lengths[2:])])  # two batches
    assert frames == 40 + 25 + 10
    valid = torch.cat([states[0, :, :40], states[1, :, :25], states[2, :, :10]], dim=1)  # (L, 75, D)
    out = norm(valid[None])[0]
    torch.testing.assert_close(out.mean(1), torch.zeros(L, D), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(1, unbiased=False), torch.ones(L, D), atol=1e-4, rtol=0)


def test_feature_norm_refuses_too_few_frames():
    from speech_adapter.models.adapters import FeatureNorm

    with pytest.raises(ValueError, match="at least 2 frames"):
        FeatureNorm(L, D).fit([(torch.zeros(1, L, 5, D), torch.tensor([1]))])


@pytest.mark.parametrize("kind", KINDS)
def test_fitted_statistics_are_in_the_state_dict_and_change_the_output(kind):
    ad = _adapter(kind)
    states, lengths = _scaled_states(2), torch.tensor([40, 30])
    with torch.no_grad():
        before, _ = ad(states, lengths)
        ad.feature_norm.fit([(states, lengths)])
        after, _ = ad(states, lengths)
    assert not torch.allclose(before, after)
    sd = ad.state_dict()
    assert {"feature_norm.mean", "feature_norm.std"} <= set(sd)
    fresh = _adapter(kind)
    fresh.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(fresh(states, lengths)[0], after)


def test_feature_norm_can_be_switched_off():
    ad = _adapter("qformer", feature_norm=False)
    assert not any("feature_norm" in k for k in ad.state_dict())


@pytest.mark.parametrize("kind", KINDS)
def test_output_norm_sets_every_real_token_to_the_given_rms(kind):
    ad = _adapter(kind)
    ad.set_output_scale(0.25)
    lengths = torch.tensor([50, 23])
    with torch.no_grad():
        out, n = ad(torch.randn(2, L, 50, D) * 30, lengths)
    rms = out.pow(2).mean(-1).sqrt()  # (B, N)
    real = torch.arange(out.shape[1])[None] < n[:, None]
    torch.testing.assert_close(rms[real], torch.full_like(rms[real], 0.25), rtol=1e-3, atol=1e-3)
    assert torch.all(out[~real] == 0)  # padded tokens stay exactly zero
    assert "output_norm.weight" in ad.state_dict()


def test_output_norm_off_leaves_the_scale_free():
    ad = _adapter("qformer", output_norm=False)
    ad.set_output_scale(0.25)  # nothing to set
    with torch.no_grad():
        out, _ = ad(torch.randn(1, L, 50, D), torch.tensor([50]))
    assert not torch.allclose(out.pow(2).mean(-1).sqrt(), torch.full((1, 5), 0.25), atol=1e-2)
    assert not any("output_norm" in k for k in ad.state_dict())
