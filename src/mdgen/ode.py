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
- Heun and an adaptive Dormand-Prince 5(4) are built in (upstream uses torchdiffeq).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mdgen.errors import DivergedError, ParamsError
from mdgen.dit import GUIDANCE_CHANNELS, LightningDiT

METHODS = ("euler", "heun", "dopri5")

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplingOptions:
    """How `SpectrogramGenerator.images` samples (its keyword arguments: `asdict(options)`).

    The fields are named as params.yaml's `sample.*` keys; the `sample` stage and `mdgen generate`
    both build one with `mdgen.params.as_dataclass(SamplingOptions, p, "sample")`.
    """
    steps: int
    method: str
    cfg_scale: float
    cfg_interval_start: float
    timestep_shift: float
    guidance_channels: str
    batch_size: int
    precision: str

    def nfe(self) -> float | None:
        """Model evaluations per image at guided steps (CFG counts both halves); None for adaptive dopri5."""
        per_step = {"euler": 1, "heun": 2}.get(self.method)
        if per_step is None:
            return None
        return float(self.steps * per_step * (2 if self.cfg_scale != 1.0 else 1))


def shifted_grid(steps: int, timestep_shift: float = 0.3) -> torch.Tensor:
    """steps + 1 float32 times from 0 to 1: t' = s*t / (1 + (s - 1)*t) of linspace(0, 1); s = 1 is uniform.

    Upstream's "no shift" value 0.0 is 1.0 here (the formula at s = 0 collapses every time to 0).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if timestep_shift <= 0:
        raise ValueError(f"timestep_shift must be > 0 (1.0 = uniform grid), got {timestep_shift}")
    t = torch.linspace(0, 1, steps + 1)
    return timestep_shift * t / (1 + (timestep_shift - 1) * t)


def velocity_fn(model: LightningDiT, labels: torch.Tensor, *, cfg_scale: float = 1.0,
                cfg_interval_start: float = 0.0, guidance_channels: str = "all", null_class: int | None = None,
                autocast_dtype: torch.dtype | None = None, skip_uncond: bool = True) -> VelocityFn:
    """fn(x [B, C, H, W], t 0-dim) -> guided velocity [B, C, H, W] (float32) for the B samples labelled `labels`.

    With cfg_scale != 1 and t >= cfg_interval_start the model runs on [x, x] with [labels, null] and
    upstream's `forward_with_cfg` combines them; otherwise only the conditional pass runs, which is what
    `forward_with_cfg` returns there anyway. skip_uncond=False runs both halves at every step as
    upstream does (same result, more work: kept so `mdgen bench` can measure the saving). `null_class`
    defaults to the model's.
    """
    assert guidance_channels in GUIDANCE_CHANNELS, f"guidance_channels {guidance_channels!r} not in {GUIDANCE_CHANNELS}"
    n = labels.shape[0]
    guided = cfg_scale != 1.0
    if guided:
        null_class = model.null_class if null_class is None else null_class
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
        with torch.autocast(device_type=x.device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
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


# Dormand-Prince 5(4) tableau (Dormand & Prince 1980; Hairer, Norsett & Wanner, Solving ODEs I, table 5.2)
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)  # also the 7th stage's row (FSAL)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP_E = tuple(b5 - b4 for b5, b4 in zip(_DP_B5 + (0.0,), _DP_B4))


def _rms(x: torch.Tensor) -> float:
    return x.pow(2).mean().sqrt().item()


def _dopri5(fn: VelocityFn, x: torch.Tensor, t0: float, t1: float, f0: torch.Tensor, h: float | None,
            atol: float, rtol: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Adaptive steps from t0 to exactly t1; returns (x(t1), f at t1, next step size).

    Error control as torchdiffeq: RMS over the whole batch of err / (atol + rtol * max(|x|, |x_new|)),
    step factor 0.9 * err^(-1/5) clamped to [0.2, 10]. The batch shares one step size, so results
    depend (within tolerance) on which samples are batched together.
    """
    t = t0
    if h is None:  # Hairer's starting step: ~1% of the scale-normalised solution over its slope
        scale = atol + rtol * x.abs()
        d0, d1 = _rms(x / scale), _rms(f0 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = fn(x + h0 * f0, torch.tensor(t + h0))
        d2 = _rms((f1 - f0) / scale) / h0
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
        h = min(100 * h0, h1)
    while t < t1:
        last = t + h >= t1
        step = t1 - t if last else h
        k = [f0]
        for c, a in zip(_DP_C[1:], _DP_A[1:]):
            xi = x + step * sum(aj * kj for aj, kj in zip(a, k))
            k.append(fn(xi, torch.tensor(t + c * step)))
        x_new = x + step * sum(b * kj for b, kj in zip(_DP_B5, k) if b != 0.0)
        f_new = fn(x_new, torch.tensor(t + step))
        err = step * sum(e * kj for e, kj in zip(_DP_E, k + [f_new]) if e != 0.0)
        err_norm = _rms(err / (atol + rtol * torch.maximum(x.abs(), x_new.abs())))
        if not math.isfinite(err_norm):
            raise DivergedError(f"dopri5: non-finite velocity or state at t={t:.6g}, step {step:.3g}")
        if step < 1e-10:
            raise DivergedError(f"dopri5: step size underflow at t={t:.6g} (atol={atol}, rtol={rtol})")
        if err_norm <= 1.0:
            t = t1 if last else t + step
            x, f0 = x_new, f_new
        factor = 10.0 if err_norm == 0 else min(10.0, max(0.2, 0.9 * err_norm ** -0.2))
        h = step * factor
    return x, f0, h


def integrate(fn: VelocityFn, x: torch.Tensor, times: torch.Tensor, *, method: str = "euler",
              atol: float = 1e-6, rtol: float = 1e-3, trajectory: bool = False) -> torch.Tensor:
    """Solve dx/dt = fn(x, t) from x at times[0] to times[-1]; returns x(times[-1]), or with
    trajectory=True the states at every time [len(times), *x.shape] (kept off when sampling: memory).

    euler: one step per interval (torchdiffeq's fixed-grid Euler, as upstream). heun: explicit
    trapezoid, 2 evaluations per interval. dopri5: adaptive (atol, rtol as upstream's defaults),
    stopping exactly at each time in `times`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r}; valid: {', '.join(METHODS)}")
    traj = [x]
    f0, h = (fn(x, times[0]), None) if method == "dopri5" else (None, None)
    for t0, t1 in zip(times[:-1], times[1:]):
        if method == "dopri5":
            x, f0, h = _dopri5(fn, x, t0.item(), t1.item(), f0, h, atol, rtol)
        elif method == "euler":
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
def sample_latents(model: LightningDiT, labels: torch.Tensor, *, steps: int | None = None, method: str = "euler",
                   cfg_scale: float = 1.0, cfg_interval_start: float = 0.0, timestep_shift: float = 0.3,
                   guidance_channels: str = "all", generator: torch.Generator | None = None,
                   noise: torch.Tensor | None = None, batch_size: int | None = None, null_class: int | None = None,
                   autocast_dtype: torch.dtype | None = None, atol: float = 1e-6, rtol: float = 1e-3,
                   skip_uncond: bool = True) -> torch.Tensor:
    """Generate one latent [C, H, W] per label: [N] labels -> [N, C, H, W] float32 on the model's device.

    steps: solver steps on the shifted grid (euler: NFE = steps, heun: 2*steps); dopri5 picks its own
    steps from atol/rtol and takes neither `steps` nor `timestep_shift`. The starting noise is `noise` [N, C, H, W] or drawn
    at once for all N from `generator` (on the generator's device, then moved), so fixed-step results
    do not depend on batch_size. The model must be in eval mode (training mode drops labels).
    Guidance: see `velocity_fn` and `LightningDiT.forward_with_cfg`; 'all' guides every channel,
    'first3' reproduces upstream; skip_uncond=False also runs the unconditional half outside the
    guidance interval (upstream's cost, same samples).
    """
    if model.training:
        raise ValueError("model is in training mode (labels would be dropped at random); call model.eval() first")
    if method == "dopri5":
        if steps is not None:
            raise ValueError(f"dopri5 chooses its own steps (atol={atol}, rtol={rtol}); got steps={steps}, pass None")
        times = torch.tensor([0.0, 1.0])
    else:
        if steps is None:
            raise ValueError(f"method {method!r} needs steps")
        times = shifted_grid(steps, timestep_shift)
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
    batch_size = batch_size or shape[0]
    out = []
    for start in range(0, shape[0], batch_size):
        y = labels[start:start + batch_size]
        fn = velocity_fn(model, y, cfg_scale=cfg_scale, cfg_interval_start=cfg_interval_start,
                         guidance_channels=guidance_channels, null_class=null_class, autocast_dtype=autocast_dtype,
                         skip_uncond=skip_uncond)
        out.append(integrate(fn, noise[start:start + batch_size], times, method=method, atol=atol, rtol=rtol))
    return torch.cat(out)
