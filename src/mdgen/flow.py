"""Rectified flow training objective (linear path, velocity prediction, MSE + cosine loss).

Convention (upstream LightningDiT `transport/`, commit 2725fed, from SiT): t = 0 is noise x0, t = 1 is
data x1, x_t = t * x1 + (1 - t) * x0, and the model predicts the velocity u_t = x1 - x0. Upstream
`train.py` adds a direction term, 1 - cosine similarity over channels between prediction and target,
to the MSE with weight 1 (`use_cosine_loss: true` in its configs); `cos_weight` exposes that weight.
Checked against the upstream loss terms in `tests/fixtures/lightningdit_tiny_parity.*`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

T_SAMPLINGS = ("logit_normal", "uniform")


def sample_t(n: int, *, sampling: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
             generator: torch.Generator | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """n flow times in (0, 1): sigmoid(N(mean, std)) (upstream `use_lognorm`, SD3's logit-normal) or uniform.

    Logit-normal with mean 0 puts most samples around t = 0.5, where the velocity is hardest to
    predict, and few at the ends. `generator` must live on `device`.
    """
    if sampling == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))
    if sampling == "uniform":
        return torch.rand(n, generator=generator, device=device)
    raise ValueError(f"unknown t sampling {sampling!r}; valid: {', '.join(T_SAMPLINGS)}")


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Point x_t on the straight path from noise x0 to data x1 at times t [B], and its velocity x1 - x0."""
    t = t.view(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
    xt = t * x1 + (1 - t) * x0
    return xt, x1 - x0


def velocity_loss_terms(pred: torch.Tensor, ut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (mse [B], cos [B]): mean over (C, H, W) of (pred - ut)^2, mean over (H, W) of 1 - cos_sim over C.

    Computed in float32 whatever the model's autocast dtype, so the loss is not rounded to bf16.
    """
    pred, ut = pred.float(), ut.float()
    # mean over all non-batch dims at once, as upstream's `mean_flat` (same reduction order, same bits)
    mse = (pred - ut).pow(2).mean(dim=tuple(range(1, pred.dim())))
    # cosine over the channel axis per spatial position (eps 1e-8, torch default as upstream)
    cos = 1 - F.cosine_similarity(pred, ut, dim=1)
    cos = cos.mean(dim=tuple(range(1, cos.dim())))
    return mse, cos


@dataclass
class FlowLoss:
    """Result of `flow_loss`: the scalar to optimise and every term behind it."""

    loss: torch.Tensor  # scalar: mse.mean() + cos_weight * cos.mean()
    mse: torch.Tensor   # [B]
    cos: torch.Tensor   # [B]
    t: torch.Tensor     # [B]
    xt: torch.Tensor    # [B, C, H, W] model input
    ut: torch.Tensor    # [B, C, H, W] target velocity
    pred: torch.Tensor  # [B, C, H, W] model output


def flow_loss(model, x1: torch.Tensor, y: torch.Tensor, *, t: torch.Tensor | None = None,
              x0: torch.Tensor | None = None, cos_weight: float = 1.0, t_sampling: str = "logit_normal",
              t_mean: float = 0.0, t_std: float = 1.0, generator: torch.Generator | None = None) -> FlowLoss:
    """Rectified flow loss of `model(x_t, t, y)` on data latents x1 [B, C, H, W] with labels y [B].

    t and the noise x0 are drawn (from `generator`, on x1's device) unless given. Label dropout for
    CFG is the model's business: it drops labels in training mode.
    """
    if t is None:
        t = sample_t(x1.shape[0], sampling=t_sampling, mean=t_mean, std=t_std, generator=generator, device=x1.device)
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    xt, ut = interpolate(x0, x1, t)
    pred = model(xt, t, y)
    mse, cos = velocity_loss_terms(pred, ut)
    loss = mse.mean() + cos_weight * cos.mean()
    return FlowLoss(loss=loss, mse=mse, cos=cos, t=t, xt=xt, ut=ut, pred=pred)
