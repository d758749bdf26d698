"""Probability-flow ODE sampling of latents, noise (t = 0) -> data (t = 1), with classifier-free guidance.

Follows upstream LightningDiT `transport/transport.py` `Sampler.sample_ode` and `transport/integrators.py`
(commit 2725fed): a grid linspace(0, 1) bent by t' = s*t / (1 + (s - 1)*t) (timestep_shift s = 0.3, upstream's
empirical choice: small steps near the noise end), Euler steps on that grid, the velocity from
`forward_with_cfg` with a guidance interval (no guidance while t < cfg_interval_start). Checked against
an upstream run in `tests/fixtures/lightningdit_tiny_parity.*`.

Differences from upstream (the Euler results are the same):
- upstream's `num_steps` counts grid points (num_steps = 250 is 249 Euler steps); `steps` here counts
  solver steps, so upstream N is steps = N - 1.
- upstream always runs the model on [cond, uncond] and, outside the guidance interval, discards the
  unconditional half; here only the conditional half runs there (half the cost for t < start) and
  the state holds only the conditional samples (upstream's second half is never read).
- Heun (two evaluations a step) is built in. Upstream's adaptive solvers come from torchdiffeq; mdgen has
  none: no default used one, and a dependency for an option nobody runs is not worth its weight.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from mdgen.accel import autocast_dtype
from mdgen.dit import GUIDANCE_CHANNELS, LightningDiT
from mdgen.errors import ParamsError
from mdgen.params import SampleConfig

METHODS = ("euler", "heun")

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def shifted_grid(steps: int, timestep_shift: float) -> torch.Tensor:
    """steps + 1 float32 times from 0 to 1: t' = s*t / (1 + (s - 1)*t) of linspace(0, 1); s = 1 is uniform.

    Upstream's "no shift" value 0.0 is 1.0 here (the formula at s = 0 collapses every time to 0).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if timestep_shift <= 0:
        raise ValueError(f"timestep_shift must be > 0 (1.0 = uniform grid), got {timestep_shift}")
    t = torch.linspace(0, 1, steps + 1)
    return timestep_shift * t / (1 + (timestep_shift - 1) * t)


def velocity_fn(model: LightningDiT, labels: torch.Tensor, config: SampleConfig, *,
                skip_uncond: bool = True) -> VelocityFn:
    """fn(x [B, C, H, W], t 0-dim) -> guided velocity [B, C, H, W] (float32) for the B samples labelled `labels`.

    With config.cfg_scale != 1 and t >= config.cfg_interval_start the model runs on [x, x] with [labels, null]
    and upstream's `forward_with_cfg` combines them; otherwise only the conditional pass runs, which is what
    `forward_with_cfg` returns there anyway. Under autocast of config.precision on the model's device.
    skip_uncond=False runs both halves at every step as upstream does (same result, more work: kept so
    `mdgen bench` can measure the saving).
    """
    cfg_scale, cfg_interval_start, guidance_channels = config.cfg_scale, config.cfg_interval_start, config.guidance_channels
    amp = autocast_dtype(next(model.parameters()).device, config.precision)
    assert guidance_channels in GUIDANCE_CHANNELS, f"guidance_channels {guidance_channels!r} not in {GUIDANCE_CHANNELS}"
    n = labels.shape[0]
    guided = cfg_scale != 1.0
    if guided:
        null_class = model.null_class
        if null_class is None:
            raise ParamsError(f"cfg_scale={cfg_scale} needs a null class, but the model was built with "
                             "class_dropout_prob=0 (no null embedding); use cfg_scale=1.0")
        y_cfg = torch.cat([labels, torch.full_like(labels, null_class)])

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(dtype=torch.float32).reshape(1)
        # decided on the host copy of t (the solvers pass CPU times): the same float32 comparison as
        # upstream's `t[0] < cfg_interval_start`, without making the host wait for the GPU every step;
        # t is then filled in on the device, since a blocking host->device copy would wait too
        in_interval = guided and not bool(t[0] < cfg_interval_start)
        t = torch.full((1,), float(t[0]), dtype=torch.float32, device=x.device)
        with torch.autocast(device_type=x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            if in_interval or (guided and not skip_uncond):
                # inside the interval the host has already checked t, so forward_with_cfg need not
                # (start 0 skips its device-side test); the full path keeps upstream's test and sync
                start = cfg_interval_start if not in_interval else 0.0
                v = model.forward_with_cfg(torch.cat([x, x]), t.expand(2 * n), y_cfg, cfg_scale,
                                           start, guidance_channels)[:n]
            else:
                v = model(x, t.expand(n), labels)
        return v.float()

    return fn


def integrate(fn: VelocityFn, x: torch.Tensor, times: torch.Tensor, method: str, *,
              trajectory: bool = False) -> torch.Tensor:
    """Solve dx/dt = fn(x, t) from x at times[0] to times[-1]; returns x(times[-1]), or with
    trajectory=True the states at every time [len(times), *x.shape] (kept off when sampling: memory).

    euler: one step per interval (torchdiffeq's fixed-grid Euler, as upstream). heun: explicit
    trapezoid, 2 evaluations per interval.
    """
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r}; valid: {', '.join(METHODS)}")
    traj = [x]
    for t0, t1 in zip(times[:-1], times[1:]):
        if method == "euler":
            x = x + (t1 - t0) * fn(x, t0)
        else:
            dt = t1 - t0
            v0 = fn(x, t0)
            v1 = fn(x + dt * v0, t1)
            x = x + dt * 0.5 * (v0 + v1)
        if trajectory:
            traj.append(x)
    return torch.stack(traj) if trajectory else x


@torch.no_grad()
def sample_latents(model: LightningDiT, labels: torch.Tensor, config: SampleConfig, *,
                   generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                   skip_uncond: bool = True) -> torch.Tensor:
    """Generate one latent [C, H, W] per label as the `sample` section says: [N] labels -> [N, C, H, W]
    float32 on the model's device.

    config.steps solver steps on the grid bent by config.timestep_shift (euler: NFE = steps, heun: 2*steps),
    config.batch_size samples at a time. The starting noise is `noise` [N, C, H, W] or drawn at once for all
    N from `generator` (on the generator's device, then moved), so results do not depend on the batch size.
    The model must be in eval mode (training mode drops labels). Guidance: see `velocity_fn` and
    `LightningDiT.forward_with_cfg`.
    """
    if model.training:
        raise ValueError("model is in training mode (labels would be dropped at random); call model.eval() first")
    times = shifted_grid(config.steps, config.timestep_shift)
    device = next(model.parameters()).device
    labels = labels.to(device)
    size = model.x_embedder.input_size
    shape = (labels.shape[0], model.in_channels, size, size)
    if noise is None:
        noise_device = generator.device if generator is not None else device
        noise = torch.randn(shape, generator=generator, device=noise_device)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != {shape} expected for {shape[0]} labels")
    noise = noise.to(device=device, dtype=torch.float32)
    out = []
    for start in range(0, shape[0], config.batch_size):
        fn = velocity_fn(model, labels[start:start + config.batch_size], config, skip_uncond=skip_uncond)
        out.append(integrate(fn, noise[start:start + config.batch_size], times, config.method))
    return torch.cat(out)
