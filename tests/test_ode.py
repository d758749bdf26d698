"""ODE sampling against an upstream 5-point Euler run with interval CFG; solvers, skipping and determinism."""
from pathlib import Path

import pytest
import torch

from dataclasses import replace

from mdgen import params
from mdgen.dit import LightningDiT
from mdgen.ode import integrate, sample_latents, shifted_grid, velocity_fn
from tests.conftest import REPO, load_upstream_dit

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-5
# params.yaml's sample section with the fixture's sampling settings (fp32: the parity tolerance)
SAMPLE = replace(params.load(REPO / "params.yaml").sample, cfg_scale=4.0, cfg_interval_start=0.11, steps=4,
                 timestep_shift=0.3, method="euler", precision="fp32", batch_size=64)
CFG = dict(cfg_scale=SAMPLE.cfg_scale, cfg_interval_start=SAMPLE.cfg_interval_start)


load_upstream = load_upstream_dit  # shared loader in conftest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def upstream():
    return load_upstream("lightningdit_tiny_parity")


def test_shifted_grid():
    _, d = load_upstream("lightningdit_tiny_parity")
    assert torch.equal(shifted_grid(4, 0.3), d["ode_tgrid"])  # upstream num_steps=5 grid points
    assert torch.allclose(shifted_grid(4, 1.0), torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="timestep_shift"):
        shifted_grid(4, 0.0)


@pytest.mark.parametrize("name", ["lightningdit_tiny_parity", "lightningdit_tiny_qknorm_parity"])
def test_euler_trajectory_matches_upstream(name):
    model, d = load_upstream(name)
    with torch.no_grad():
        # upstream layout: state [cond half, uncond half], model_fn = forward_with_cfg
        full = integrate(lambda x, t: model.forward_with_cfg(x, t.reshape(1).expand(len(x)), d["cfg_y"],
                                                             CFG["cfg_scale"], CFG["cfg_interval_start"], "first3"),
                         d["ode_init"], d["ode_tgrid"], "euler", trajectory=True)
        # mdgen layout: conditional half only, unconditional pass skipped below the interval
        first3 = replace(SAMPLE, guidance_channels="first3")
        fn = velocity_fn(model, d["cfg_y"][:2], first3)
        half = integrate(fn, d["ode_init"][:2], shifted_grid(4, 0.3), "euler", trajectory=True)
        final = sample_latents(model, d["cfg_y"][:2], first3, noise=d["ode_init"][:2])
    diffs = {
        "traj_upstream_layout": (full - d["ode_traj"]).abs().max().item(),
        "traj_cond_half": (half - d["ode_traj"][:, :2]).abs().max().item(),
        "final_cond": (final - d["ode_final_cond"]).abs().max().item(),
    }
    print(name, diffs)
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("guidance_channels", ["first3", "all"])
def test_skipping_uncond_half_equals_computing_it(upstream, guidance_channels):
    model, d = upstream
    x, y = d["cfg_x"][:2], d["cfg_y"][:2]
    batch_sizes = []
    handle = model.x_embedder.register_forward_pre_hook(lambda m, args: batch_sizes.append(args[0].shape[0]))
    try:
        fn = velocity_fn(model, y, replace(SAMPLE, guidance_channels=guidance_channels))
        with torch.no_grad():
            for t in (0.05, 0.6):  # below and above the interval start
                tt = torch.tensor(t)
                skipped = fn(x, tt)
                computed = model.forward_with_cfg(torch.cat([x, x]), tt.expand(4), d["cfg_y"], CFG["cfg_scale"],
                                                  CFG["cfg_interval_start"], guidance_channels)[:2]
                assert (skipped - computed).abs().max().item() <= TOL
    finally:
        handle.remove()
    # t=0.05: conditional pass only (2), reference (4); t=0.6: guided (4), reference (4)
    assert batch_sizes == [2, 4, 4, 4]


def test_seeded_sampling_is_deterministic_and_batch_independent(upstream):
    model, _ = upstream
    labels = torch.tensor([0, 1, 2, 3, 4])
    config = replace(SAMPLE, steps=6, cfg_scale=2.0, cfg_interval_start=0.1)
    a = sample_latents(model, labels, config, generator=torch.Generator().manual_seed(7))
    b = sample_latents(model, labels, config, generator=torch.Generator().manual_seed(7))
    c = sample_latents(model, labels, replace(config, batch_size=2), generator=torch.Generator().manual_seed(7))
    other = sample_latents(model, labels, config, generator=torch.Generator().manual_seed(8))
    assert a.shape == (5, 32, 4, 4) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert (a - c).abs().max().item() <= TOL  # same noise per sample; only the matmul batch differs
    assert not torch.allclose(a, other)


def test_heun_converges_to_fine_euler_at_second_order(upstream):
    model, d = upstream
    x0 = d["ode_init"][:2]
    fn = velocity_fn(model, d["cfg_y"][:2], replace(SAMPLE, cfg_scale=2.0, cfg_interval_start=0.0))

    with torch.no_grad():
        # Richardson extrapolation of 400- and 200-step Euler: second-order accurate reference
        ref = 2 * integrate(fn, x0, shifted_grid(400, 1.0), "euler") - integrate(fn, x0, shifted_grid(200, 1.0), "euler")
        err = {m_s: (integrate(fn, x0, shifted_grid(m_s[1], 0.3), m_s[0]) - ref).abs().max().item()
               for m_s in [("euler", 32), ("heun", 16), ("heun", 32)]}
    print(err)
    assert err[("heun", 32)] < 5e-3 and err[("heun", 32)] * 10 < err[("euler", 32)]
    assert err[("heun", 16)] / err[("heun", 32)] > 3  # second order: ~4x per halving


def test_sampling_errors_and_autocast(upstream):
    model, d = upstream
    labels = torch.tensor([0, 1])
    two = replace(SAMPLE, steps=2)
    with pytest.raises(ValueError, match="noise shape"):
        sample_latents(model, labels, two, noise=torch.randn(3, 32, 4, 4))
    with pytest.raises(ValueError, match="valid"):
        sample_latents(model, labels, replace(two, method="rk4"))
    no_null = LightningDiT(input_size=4, hidden_size=32, depth=1, num_heads=2, num_classes=5,
                           class_dropout_prob=0.0).eval()
    with pytest.raises(ValueError, match="null class"):
        sample_latents(no_null, labels, replace(two, cfg_scale=2.0))
    model.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            sample_latents(model, labels, two)
    finally:
        model.eval()
    noise = d["ode_init"][:2]
    fp32 = sample_latents(model, labels, replace(SAMPLE, cfg_scale=1.0), noise=noise)
    bf16 = sample_latents(model, labels, replace(SAMPLE, cfg_scale=1.0, precision="bf16"), noise=noise)
    assert bf16.dtype == torch.float32 and (bf16 - fp32).abs().max() < 0.1 * fp32.abs().max()


def test_sample_section_nfe():
    assert replace(SAMPLE, method="euler", steps=10, cfg_scale=1.0).nfe() == 10.0
    assert replace(SAMPLE, method="heun", steps=10, cfg_scale=2.0).nfe() == 40.0  # both CFG halves
