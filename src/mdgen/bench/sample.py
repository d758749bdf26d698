"""`mdgen bench --what sample`: one velocity evaluation of `mdgen.ode.velocity_fn` (guided and
conditional), the tokenizer decode, and images/s at --steps NFE from the step plan."""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace

import torch

from mdgen.bench.common import (NUM_CLASSES, PRECISIONS, QUICK_TOKENIZER, device_info, dit_config, dit_kwargs, ms,
                                peak_for, time_calls, warm_compiled)
from mdgen.bench.flops import flops_per_sample
from mdgen.dit import build_dit
from mdgen.ode import sample_latents, shifted_grid, velocity_fn
from mdgen.params import SampleConfig
from mdgen.tokenizer import AutoencoderKL

# images per tokenizer decode call in the sample section: the tokenizer benchmark's batch, and it
# keeps the decoder's full-resolution activations (128 x 256 x 256 per image) to a few GB
DECODE_CHUNK = 64


def guided_steps(steps: int, cfg_scale: float, cfg_interval_start: float, timestep_shift: float) -> int:
    """Euler steps that run both CFG halves in mdgen's sampler: those starting at t >= cfg_interval_start.

    Same float32 comparison as `mdgen.ode.velocity_fn`, on the same grid.
    """
    if cfg_scale == 1.0:
        return 0
    times = shifted_grid(steps, timestep_shift)[:-1]
    return int((~(times < cfg_interval_start)).sum())


def plan_seconds(cfg: dict, n_steps: int, skip: bool, cond_s: float, cfg_s: float | None) -> float:
    """Latent sampling time of n_steps Euler steps from the per-evaluation times: guided steps with
    both halves, the rest conditional only (skip), or both halves at every step (not skip)."""
    if cfg_s is None:  # no guidance
        return n_steps * cond_s
    if not skip:
        return n_steps * cfg_s
    n_guided = guided_steps(n_steps, cfg["cfg_scale"], cfg["cfg_interval_start"], cfg["timestep_shift"])
    return n_guided * cfg_s + (n_steps - n_guided) * cond_s


def decoder(tokenizer: AutoencoderKL, amp: torch.dtype | None, channels_last: bool) -> Callable:
    """decode(z) -> the images of z, in chunks of DECODE_CHUNK, under autocast `amp`, NHWC if channels_last."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    tokenizer = tokenizer.to(memory_format=fmt)

    def decode(z: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(), torch.autocast(z.device.type, dtype=amp or torch.float32,
                                                    enabled=amp is not None):
            return [tokenizer.decode(c.contiguous(memory_format=fmt)) for c in z.split(DECODE_CHUNK)]

    return decode


def sample_config(cfg: dict) -> SampleConfig:
    """The `sample` section this run's flags describe (Euler, every channel guided, the whole batch at once)."""
    batch = cfg["batch"]["sample"]
    return SampleConfig(images_per_user=batch, steps=cfg["steps"], method="euler", cfg_scale=cfg["cfg_scale"],
                        cfg_interval_start=cfg["cfg_interval_start"], timestep_shift=cfg["timestep_shift"],
                        guidance_channels="all", batch_size=batch, plot_per_user=1, precision=cfg["precision"])


def _velocity_fns(cfg: dict, device: torch.device, x: torch.Tensor, labels: torch.Tensor):
    """((model, {"cond": fn, "cfg": fn}), compiled, warm-up seconds); "cfg" only with guidance."""
    config, cfg_scale = sample_config(cfg), cfg["cfg_scale"]
    cuda_graphs = cfg["cuda_graphs"] and cfg["compile"]
    t_mid = torch.tensor(0.5)

    def build(compile: bool):
        torch.manual_seed(cfg["seed"])
        with torch.device(device):
            model = build_dit(cfg["model"], **dit_kwargs(cfg))
        model.eval().requires_grad_(False)
        if compile:
            # in place, so that forward_with_cfg's self(...) and sample_latents' checks see one model;
            # static shapes: the cond (B) and guided (2B) batches each get their own specialised graph
            model.compile(dynamic=False, mode="reduce-overhead" if cuda_graphs else None)
        fns = {"cond": velocity_fn(model, labels, replace(config, cfg_scale=1.0))}
        if cfg_scale != 1.0:  # interval start 0: always guided, whatever t
            fns["cfg"] = velocity_fn(model, labels, replace(config, cfg_interval_start=0.0))
        return model, fns

    def warm(state) -> None:
        for fn in state[1].values():
            for _ in range(max(1, cfg["warmup"])):
                fn(x, t_mid)

    return warm_compiled(build, warm, cfg["compile"], device, "bench sample")


def _decode_seconds(cfg: dict, device: torch.device, x: torch.Tensor) -> float:
    """Median time of the tokenizer decode of the batch (eager; random weights)."""
    dit = dit_config(cfg)
    torch.manual_seed(cfg["seed"])
    with torch.device(device):
        tokenizer = AutoencoderKL(**QUICK_TOKENIZER) if cfg["quick"] else AutoencoderKL()
    tokenizer.eval().requires_grad_(False)
    f = tokenizer.downsample_factor
    if tokenizer.config["embed_dim"] != dit["in_channels"] or cfg["image_size"] // f != dit["input_size"]:
        raise ValueError(f"tokenizer latents {tokenizer.config['embed_dim']}x{cfg['image_size'] // f} do not fit "
                         f"the DiT's {dit['in_channels']}x{dit['input_size']}")
    decode = decoder(tokenizer, PRECISIONS[cfg["precision"]], cfg["channels_last"])
    return statistics.median(time_calls(lambda: decode(x), device, warmup=max(1, cfg["warmup"]),
                                        repeats=cfg["repeats"]))


def _end_to_end(cfg: dict, device: torch.device, model, labels, x, decode_s: float, per_eval: dict) -> dict:
    """`sample_latents` for --e2e-steps steps, timed, beside the step plan's estimate."""
    n = cfg["e2e_steps"]

    def run():
        return sample_latents(model, labels, replace(sample_config(cfg), steps=n), noise=x,
                              skip_uncond=cfg["skip_uncond"])

    # one untimed run: CUDA-graph trees record the cond -> guided sequence on its first pass
    lat_s = statistics.median(time_calls(run, device, warmup=1, repeats=cfg["repeats"]))
    estimate = plan_seconds(cfg, n, cfg["skip_uncond"], per_eval["cond"], per_eval.get("cfg"))
    batch = x.shape[0]
    return {"steps": n, "latents_ms": ms(lat_s), "latents_ms_estimate": ms(estimate),
            "latents_images_per_s": batch / lat_s, "images_per_s": batch / (lat_s + decode_s)}


@torch.no_grad()  # as sample_latents: the compiled graphs are specialised to the grad mode
def bench_sample(cfg: dict, device: torch.device) -> dict:
    """Sampling throughput. Keys: batch, steps (= NFE), guided_steps, skip_uncond, compiled,
    cuda_graphs, warmup_s, cfg_forward_ms (None without guidance), cond_forward_ms, decode_ms,
    cfg_forward_tflops, cfg_forward_mfu, latents_images_per_s and images_per_s (the path chosen by
    --skip-uncond) and both paths' as *_skip_uncond / *_full_cfg, e2e (None or {steps,
    latents_images_per_s, images_per_s, latents_ms, latents_ms_estimate})."""
    batch, steps = cfg["batch"]["sample"], cfg["steps"]
    dit = dit_config(cfg)
    gen = torch.Generator(device).manual_seed(cfg["seed"])
    x = torch.randn(batch, dit["in_channels"], dit["input_size"], dit["input_size"], generator=gen, device=device)
    labels = torch.arange(batch, device=device) % NUM_CLASSES
    (model, fns), compiled, warm_s = _velocity_fns(cfg, device, x, labels)
    t_mid = torch.tensor(0.5)
    per_eval = {k: statistics.median(time_calls(lambda fn=fn: fn(x, t_mid), device, warmup=0,
                                                repeats=cfg["repeats"], iters=cfg["iters"]))
                for k, fn in fns.items()}
    cond_s, cfg_s = per_eval["cond"], per_eval.get("cfg")
    decode_s = _decode_seconds(cfg, device, x)

    n_guided = guided_steps(steps, cfg["cfg_scale"], cfg["cfg_interval_start"], cfg["timestep_shift"])
    out = {"batch": batch, "steps": steps, "guided_steps": n_guided, "skip_uncond": cfg["skip_uncond"], "compiled": compiled,
           "cuda_graphs": cfg["cuda_graphs"] and compiled and device.type == "cuda", "warmup_s": warm_s,
           "cfg_forward_ms": ms(cfg_s), "cond_forward_ms": ms(cond_s), "decode_ms": ms(decode_s)}
    fwd, peak = flops_per_sample(model), peak_for(device_info(device), cfg["precision"], cfg["tf32"])
    out["cfg_forward_tflops"] = 2 * batch * fwd / cfg_s / 1e12 if cfg_s is not None else None
    out["cfg_forward_mfu"] = out["cfg_forward_tflops"] / peak if cfg_s is not None and peak else None
    for name, skip in (("skip_uncond", True), ("full_cfg", False)):
        lat_s = plan_seconds(cfg, steps, skip, cond_s, cfg_s)
        out[f"latents_images_per_s_{name}"] = batch / lat_s
        out[f"images_per_s_{name}"] = batch / (lat_s + decode_s)
    chosen = "skip_uncond" if cfg["skip_uncond"] else "full_cfg"
    out["latents_images_per_s"] = out[f"latents_images_per_s_{chosen}"]
    out["images_per_s"] = out[f"images_per_s_{chosen}"]
    out["e2e"] = _end_to_end(cfg, device, model, labels, x, decode_s, per_eval) if cfg["e2e_steps"] else None
    return out
