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
