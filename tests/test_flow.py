"""Rectified flow loss against upstream's training_losses terms, t sampling, and a tiny overfit run."""
from pathlib import Path

import pytest
import torch

from mdgen.dit import LightningDiT
from mdgen.flow import flow_loss, interpolate, sample_t, velocity_loss_terms
from tests.conftest import load_upstream_dit

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-5


load_upstream = load_upstream_dit  # shared loader in conftest


@pytest.mark.parametrize("name", ["lightningdit_tiny_parity", "lightningdit_tiny_qknorm_parity"])
def test_loss_terms_match_upstream(name):
    model, d = load_upstream(name)
    with torch.no_grad():
        r = flow_loss(model, d["loss_x1"], d["y"], t=d["loss_t"], x0=d["loss_x0"])
    diffs = {
        "xt": (r.xt - d["loss_xt"]).abs().max().item(),
        "ut": (r.ut - d["loss_ut"]).abs().max().item(),
        "pred": (r.pred - d["loss_pred"]).abs().max().item(),
        "mse": (r.mse - d["loss_mse"]).abs().max().item(),
        "cos": (r.cos - d["loss_cos"]).abs().max().item(),
        "total": (r.loss - d["loss_total"]).abs().max().item(),
    }
    print(name, diffs)
    assert max(diffs.values()) <= TOL, diffs
    assert r.loss.shape == () and r.mse.shape == r.cos.shape == (2,)


def test_loss_terms_definition_and_weight():
    pred, ut = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    mse, cos = velocity_loss_terms(pred, ut)
    assert torch.allclose(mse, ((pred - ut) ** 2).reshape(3, -1).mean(1))
    cos_ref = 1 - (pred * ut).sum(1) / (pred.norm(dim=1) * ut.norm(dim=1))
    assert torch.allclose(cos, cos_ref.reshape(3, -1).mean(1), atol=1e-6)
    # a prediction parallel to the target has no direction loss
    assert velocity_loss_terms(2 * ut, ut)[1].abs().max() < 1e-6
    model = lambda x, t, y: x  # noqa: E731
    x1, x0, t = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2), torch.rand(2)
    r0 = flow_loss(model, x1, None, t=t, x0=x0, cos_weight=0.0)
    r2 = flow_loss(model, x1, None, t=t, x0=x0, cos_weight=2.0)
    assert torch.allclose(r0.loss, r0.mse.mean()) and torch.allclose(r2.loss, r2.mse.mean() + 2 * r2.cos.mean())


def test_linear_path_endpoints():
    x0, x1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    xt, ut = interpolate(x0, x1, torch.tensor([0.0, 1.0]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], x1[1]) and torch.equal(ut, x1 - x0)


def test_t_sampling():
    g = torch.Generator().manual_seed(0)
    t = sample_t(20000, generator=g)
    assert 0 < t.min() and t.max() < 1 and abs(t.mean().item() - 0.5) < 0.01
    logit = torch.logit(t)
    assert abs(logit.std().item() - 1.0) < 0.03
    shifted = sample_t(20000, mean=1.0, std=0.5, generator=g)
    assert abs(torch.logit(shifted).mean().item() - 1.0) < 0.02
    u = sample_t(20000, sampling="uniform", generator=g)
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.std().item() - (1 / 12) ** 0.5) < 0.01
    assert torch.equal(sample_t(5, generator=torch.Generator().manual_seed(3)),
                       sample_t(5, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="logit_normal"):
        sample_t(4, sampling="beta")


def test_tiny_model_overfits_eight_latents():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on shared cores: threading only adds overhead
    try:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        x1, y = torch.randn(8, 32, 4, 4, generator=g), torch.arange(8)
        model = LightningDiT(input_size=4, in_channels=32, hidden_size=64, depth=2, num_heads=4, num_classes=8,
                             class_dropout_prob=0.0)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)

        def held_out_loss():  # fixed noise and times, 16 draws per latent
            with torch.no_grad():
                return flow_loss(model, x1.repeat(16, 1, 1, 1), y.repeat(16),
                                 generator=torch.Generator().manual_seed(123)).loss.item()

        before = held_out_loss()
        for _ in range(300):
            loss = flow_loss(model, x1.repeat(8, 1, 1, 1), y.repeat(8), generator=g).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = held_out_loss()
    finally:
        torch.set_num_threads(threads)
    print(f"overfit: {before:.3f} -> {after:.3f}")
    assert after * 5 <= before, (before, after)
