"""`mdgen bench`: training, sampling and tokenizer throughput on one device, as a table and as JSON.

    mdgen bench --quick --what all --out bench.json      # tiny configs, seconds on a CPU (CI runs this)
    mdgen bench --what train --model LightningDiT-XL/1 --batch 128 --precision bf16 --compile
    mdgen bench --what sample --batch 256 --steps 250 --no-skip-uncond     # upstream's CFG cost
    PYTHONPATH=src python -m mdgen.bench ...                                # without installing

Weights and data are random (speed does not depend on them). Warm-up calls, compilation included,
are not timed; the device is synchronised around each timed round of --iters calls; figures are
the median over --repeats rounds.

- train: one optimizer step of `mdgen.training.FlowModule`, as Lightning's loop runs it: flow loss
  through the (compiled) model under autocast (`FlowModule.train_loss`), backward, AdamW step
  (`FlowModule.make_optimizer`), EMA update (`FlowModule.update_ema`); see `train_step`.
  samples/s = batch / step time. Model TFLOP/s = 3 x `mdgen.dit.flops_per_sample` x samples/s
  (forward, plus a backward of twice the forward's matmul work); `mfu` = that / `peak_tflops`,
  the device's dense datasheet peak for the precision (PEAK_TFLOPS; None where unknown, e.g. CPU).
- sample: `mdgen.sampling.velocity_fn` for --batch images, timed per velocity evaluation: one
  guided step (`cfg_forward_ms`, the model on 2 x batch rows) and one conditional step
  (`cond_forward_ms`). With Euler one step is one evaluation, so --steps is the NFE: images/s at
  that NFE follow from the step plan: `guided_steps` steps inside the guidance interval with both
  halves and the rest conditional only (skip_uncond, mdgen's sampler), or both halves at every step
  (full_cfg, upstream); latents only, and with the tokenizer decode (`decode_ms`: eager, in chunks
  of DECODE_CHUNK, --precision and --channels-last; its compiled speed is the tokenizer section's).
  `e2e` times `sample_latents` end to end for --e2e-steps steps (0: skipped), plus the decode.
- tokenizer: `mdgen.bench_tokenizer.benchmark_tokenizer` (encode with posterior sampling, decode).

Fast paths, each behind a flag so that before/after run on the same card. Defaults: on for CUDA,
the plain path on CPU; the ones marked * are on everywhere.
  --compile          whole-model torch.compile (DiT forward; tokenizer encode/decode); a backend
                     failure falls back to eager with a warning, and the result says compiled: false
  --precision bf16   autocast to bf16, fp32 weights and optimizer (Lightning's bf16-mixed)
  --sdpa             attention kernel of F.scaled_dot_product_attention: auto* (PyTorch picks
                     flash for bf16 on Hopper), flash, efficient, cudnn, math (the reference)
  --tf32             TF32 tensor cores for fp32 matmuls and convolutions (CUDA)
  --fused-adamw      one fused AdamW kernel for all parameters instead of the foreach one
  --ema foreach*     one fused lerp over all EMA tensors; `loop` is upstream's per-tensor update
  --data device*     batch already on the device; `host` copies a pinned batch in every step
  --no-host-sync*    no device->host read in the step; --host-sync reads the loss every step
                     (upstream's `loss.item()` logging)
  --skip-uncond*     no unconditional half outside the guidance interval
  --channels-last    NHWC convolutions for the tokenizer
  --cuda-graphs      (off by default) sampling through compile mode "reduce-overhead" (CUDA graphs
                     for the fixed shapes); needs --compile; pays when launches dominate (small
                     batches), not at 256 images. Euler only: graph outputs live until the next call.

JSON (--out): {"device": {type, name, peak_tflops}, "torch", "cuda", "python", "settings": the
resolved flags, "results": {"train": {...}, "sample": {...}, "tokenizer": {...}}}; a section that
failed holds {"error": "..."} and the command exits 1. Keys per section: see `bench_train`,
`bench_sample`, `bench_tokenizer_section`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable

import torch

from mdgen import bench_tokenizer
from mdgen.bench_tokenizer import sync, time_calls
from mdgen.dit import LightningDiT_configs, build_dit, flops_per_sample
from mdgen.io import atomic_path
from mdgen.sampling import sample_latents, shifted_grid, velocity_fn
from mdgen.tokenizer import AutoencoderKL

WHATS = ("train", "sample", "tokenizer")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")

# Dense (no sparsity) datasheet peaks in TFLOP/s as (bf16, tf32, fp32), matched in order against the
# CUDA device name. H200 SXM is the H100 SXM chip with more memory, so the same rates; a bf16 GEMM
# measured about 790 there (the "≈790"): mfu is against the datasheet, i.e. conservative.
PEAK_TFLOPS = (
    ("H200", (989.4, 494.7, 66.9)),
    ("H100 PCIe", (756.5, 378.0, 51.2)),
    ("H100 NVL", (835.5, 417.5, 60.0)),
    ("H100", (989.4, 494.7, 66.9)),  # SXM5, named "NVIDIA H100 80GB HBM3"
    ("A100", (312.0, 156.0, 19.5)),
)

# --quick: CPU-sized stand-ins with the real data flow. The DiT keeps head_dim 32 (RoPE needs a
# multiple of 4) and the tokenizer maps 64x64 images to 32x8x8 latents, the DiT's input.
QUICK_MODEL = "LightningDiT-Tiny/1"
QUICK_DIT = dict(hidden_size=64, depth=2, num_heads=2, input_size=8)
QUICK_TOKENIZER = dict(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(), resolution=64)
QUICK_IMAGE_SIZE = 64
IMAGE_SIZE = 256
# upstream's ImageNet label table, so figures compare with upstream's; mdgen has one label per user,
# which changes one embedding lookup and nothing measurable
NUM_CLASSES = 1000
# images per tokenizer decode call in the sample section: the tokenizer benchmark's batch, and it
# keeps the decoder's full-resolution activations (128 x 256 x 256 per image) to a few GB
DECODE_CHUNK = 64


# ----------------------------------------------------------------------------- device set-up

def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": name, "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1), "peak_tflops": device_peaks(name)}
    return {"type": device.type, "name": _cpu_name(), "threads": torch.get_num_threads(), "peak_tflops": None}


def _cpu_name() -> str:
    try:  # Linux: the marketing name; platform.processor() is often empty or just the architecture
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_peaks(name: str) -> dict | None:
    for key, (bf16, tf32, fp32) in PEAK_TFLOPS:
        if key in name:
            return {"bf16": bf16, "tf32": tf32, "fp32": fp32}
    return None


def peak_for(info: dict, precision: str, tf32: bool) -> float | None:
    """The peak that bounds this run's matmuls: bf16, else TF32 when enabled, else plain fp32."""
    peaks = info.get("peak_tflops")
    if not peaks:
        return None
    return peaks["bf16"] if precision == "bf16" else peaks["tf32" if tf32 else "fp32"]


def configure_backends(device: torch.device, tf32: bool) -> None:
    """TF32 for fp32 matmuls/convolutions and cuDNN autotuning (every shape here is fixed); CUDA only.

    `set_float32_matmul_precision` rather than the newer `fp32_precision` attributes: mixing those
    with the legacy `allow_tf32` flags, which the compiler still reads, raises in torch >= 2.9.
    On CPU it would also switch oneDNN's fp32 matmuls, so the CPU is left alone.
    """
    if device.type != "cuda":
        return
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True


def sdpa_backend(name: str):
    """Context restricting F.scaled_dot_product_attention to one kernel; 'auto' leaves PyTorch's choice."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([{"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                         "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]])


def warm_or_fallback(build: Callable[[bool], object], warm: Callable[[object], None], compile: bool,
                     device: torch.device) -> tuple[object, bool, float]:
    """(obj, compiled, seconds): obj = build(compile), then warm(obj), where compilation happens.

    torch.compile fails on the first call, not when wrapping; then this warns, rebuilds without it
    and warms again, so a broken toolchain costs the speed-up, not the figures. Out of memory is
    not a compile failure and is raised.
    """
    t0 = time.perf_counter()
    obj = build(compile)
    if compile:
        try:
            warm(obj)
            sync(device)
            return obj, True, time.perf_counter() - t0
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 -- any backend/toolchain failure: measure eager instead
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); benchmarking eager instead")
        # rebuilt outside the except block, whose traceback would keep the failed model's memory alive
        del obj
        t0 = time.perf_counter()
        obj = build(False)
    warm(obj)
    sync(device)
    return obj, False, time.perf_counter() - t0


def _dit_kwargs(cfg: dict) -> dict:
    return {"num_classes": NUM_CLASSES, **(QUICK_DIT if cfg["quick"] else {})}


def _dit_config(cfg: dict) -> dict:
    with torch.device("meta"):  # the resolved config without allocating or initialising weights
        return build_dit(cfg["model"], **_dit_kwargs(cfg)).config


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


# ----------------------------------------------------------------------------- train

@torch.no_grad()
def ema_update_loop(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Upstream's EMA (DiT/LightningDiT `train.py` `update_ema`): a mul_ and an add_ per tensor.

    The plain path that `--ema loop` measures against `FlowModule.update_ema`'s single fused lerp.
    """
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def train_step(module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor], *,
               autocast_dtype: torch.dtype | None = None, ema: str = "foreach", host_sync: bool = False) -> torch.Tensor:
    """One optimizer step of a `FlowModule` as Lightning's automatic optimisation runs it.

    Loss under autocast (bf16-mixed: fp32 weights, bf16 matmuls), backward outside it, optimizer
    step, gradients dropped, EMA update. Returns the detached loss without reading it, so the host
    never waits for the device; host_sync=True reads it every step, as upstream's logging does.
    """
    device_type = batch[0].device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        loss = module.train_loss(batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if ema == "foreach":
        module.update_ema()
    elif ema == "loop":
        ema_update_loop(module.ema, module.model, module.hparams.ema_decay)
    else:
        raise ValueError(f"ema {ema!r}: expected 'foreach' or 'loop'")
    if host_sync:
        loss.item()
    return loss.detach()


def bench_train(cfg: dict, device: torch.device) -> dict:
    """Training-step throughput. Keys: batch, compiled, warmup_s, step_ms, step_ms_repeats,
    samples_per_s, fwd_gflops_per_sample, tflops (3 x forward FLOPs x samples/s), peak_tflops,
    mfu (None where the peak is unknown), loss (the last step's)."""
    from mdgen.training import FlowModule  # Lightning is imported only for this section

    batch = cfg["batch"]["train"]
    amp = PRECISIONS[cfg["precision"]]
    dit = _dit_config(cfg)
    gen = torch.Generator(device).manual_seed(cfg["seed"])
    shape = (batch, dit["in_channels"], dit["input_size"], dit["input_size"])
    x1 = torch.randn(shape, generator=gen, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen, device=device)
    if cfg["data"] == "host":  # what a DataLoader with pin_memory hands over, copied in every step
        pin = device.type == "cuda"
        x1_host, y_host = (x1.cpu().pin_memory(), y.cpu().pin_memory()) if pin else (x1.cpu(), y.cpu())

        def get_batch():
            return x1_host.to(device, non_blocking=True), y_host.to(device, non_blocking=True)
    else:
        def get_batch():
            return x1, y

    def build(compile: bool):
        torch.manual_seed(cfg["seed"])
        with torch.device(device):  # weights made where they run: no host init and copy of 675 M params
            module = FlowModule(cfg["model"], _dit_kwargs(cfg), compile=compile)
        module.to(device).train()  # .to also records the device in Lightning's bookkeeping
        return module, module.make_optimizer(fused=cfg["fused_adamw"])

    last = {}

    def step(state) -> None:
        module, opt = state
        last["loss"] = train_step(module, opt, get_batch(), autocast_dtype=amp, ema=cfg["ema"],
                                  host_sync=cfg["host_sync"])

    state, compiled, warm_s = warm_or_fallback(
        build, lambda s: [step(s) for _ in range(max(1, cfg["warmup"]))], cfg["compile"], device)
    times = time_calls(lambda: step(state), device, warmup=0, repeats=cfg["repeats"], iters=cfg["iters"])
    step_s = statistics.median(times)
    fwd = flops_per_sample(dit)
    tflops = 3 * fwd * batch / step_s / 1e12
    peak = peak_for(device_info(device), cfg["precision"], cfg["tf32"])
    return {"batch": batch, "compiled": compiled, "warmup_s": warm_s, "step_ms": _ms(step_s),
            "step_ms_repeats": [_ms(t) for t in times], "samples_per_s": batch / step_s,
            "fwd_gflops_per_sample": fwd / 1e9, "tflops": tflops, "peak_tflops": peak,
            "mfu": tflops / peak if peak else None, "loss": float(last["loss"])}


# ----------------------------------------------------------------------------- sample

def guided_steps(steps: int, cfg_scale: float, cfg_interval_start: float, timestep_shift: float) -> int:
    """Euler steps that run both CFG halves in mdgen's sampler: those starting at t >= cfg_interval_start.

    Same float32 comparison as `mdgen.sampling.velocity_fn`, on the same grid.
    """
    if cfg_scale == 1.0:
        return 0
    times = shifted_grid(steps, timestep_shift)[:-1]
    return int((~(times < cfg_interval_start)).sum())


def _decoder(tokenizer: AutoencoderKL, amp: torch.dtype | None, channels_last: bool) -> Callable:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    tokenizer = tokenizer.to(memory_format=fmt)

    def decode(z: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(), torch.autocast(z.device.type, dtype=amp or torch.float32,
                                                    enabled=amp is not None):
            return [tokenizer.decode(c.contiguous(memory_format=fmt)) for c in z.split(DECODE_CHUNK)]

    return decode


@torch.no_grad()  # as sample_latents: the compiled graphs are specialised to the grad mode
def bench_sample(cfg: dict, device: torch.device) -> dict:
    """Sampling throughput. Keys: batch, steps (= NFE), guided_steps, skip_uncond, compiled,
    cuda_graphs, warmup_s, cfg_forward_ms (None without guidance), cond_forward_ms, decode_ms,
    cfg_forward_tflops, cfg_forward_mfu, latents_images_per_s and images_per_s (the path chosen by
    --skip-uncond) and both paths' as *_skip_uncond / *_full_cfg, e2e (None or {steps,
    latents_images_per_s, images_per_s, latents_ms, latents_ms_estimate})."""
    batch, steps = cfg["batch"]["sample"], cfg["steps"]
    amp = PRECISIONS[cfg["precision"]]
    cfg_scale, start, shift = cfg["cfg_scale"], cfg["cfg_interval_start"], cfg["timestep_shift"]
    guided = cfg_scale != 1.0
    cuda_graphs = cfg["cuda_graphs"] and cfg["compile"]
    dit = _dit_config(cfg)
    gen = torch.Generator(device).manual_seed(cfg["seed"])
    x = torch.randn(batch, dit["in_channels"], dit["input_size"], dit["input_size"], generator=gen, device=device)
    labels = torch.arange(batch, device=device) % NUM_CLASSES
    t_mid = torch.tensor(0.5)

    def build(compile: bool):
        torch.manual_seed(cfg["seed"])
        with torch.device(device):
            model = build_dit(cfg["model"], **_dit_kwargs(cfg))
        model.eval().requires_grad_(False)
        if compile:
            # in place, so that forward_with_cfg's self(...) and sample_latents' checks see one model;
            # static shapes: the cond (B) and guided (2B) batches each get their own specialised graph
            model.compile(dynamic=False, mode="reduce-overhead" if cuda_graphs else None)
        fns = {"cond": velocity_fn(model, labels, autocast_dtype=amp)}
        if guided:  # interval start 0: always guided, whatever t
            fns["cfg"] = velocity_fn(model, labels, cfg_scale=cfg_scale, autocast_dtype=amp)
        return model, fns

    def warm(state) -> None:
        for fn in state[1].values():
            for _ in range(max(1, cfg["warmup"])):
                fn(x, t_mid)

    (model, fns), compiled, warm_s = warm_or_fallback(build, warm, cfg["compile"], device)
    per_eval = {k: statistics.median(time_calls(lambda fn=fn: fn(x, t_mid), device, warmup=0,
                                                repeats=cfg["repeats"], iters=cfg["iters"]))
                for k, fn in fns.items()}
    cond_s, cfg_s = per_eval["cond"], per_eval.get("cfg")

    torch.manual_seed(cfg["seed"])
    with torch.device(device):
        tokenizer = AutoencoderKL(**QUICK_TOKENIZER) if cfg["quick"] else AutoencoderKL()
    tokenizer.eval().requires_grad_(False)
    f = tokenizer.downsample_factor
    if tokenizer.config["embed_dim"] != dit["in_channels"] or cfg["image_size"] // f != dit["input_size"]:
        raise ValueError(f"tokenizer latents {tokenizer.config['embed_dim']}x{cfg['image_size'] // f} do not fit "
                         f"the DiT's {dit['in_channels']}x{dit['input_size']}")
    decode = _decoder(tokenizer, amp, cfg["channels_last"])
    decode_s = statistics.median(time_calls(lambda: decode(x), device, warmup=max(1, cfg["warmup"]),
                                            repeats=cfg["repeats"]))

    def plan_seconds(n_steps: int, skip: bool) -> float:
        n_guided = guided_steps(n_steps, cfg_scale, start, shift)
        if not guided:
            return n_steps * cond_s
        return n_guided * cfg_s + (n_steps - n_guided) * cond_s if skip else n_steps * cfg_s

    out = {"batch": batch, "steps": steps, "guided_steps": guided_steps(steps, cfg_scale, start, shift),
           "skip_uncond": cfg["skip_uncond"], "compiled": compiled, "cuda_graphs": cuda_graphs and compiled
           and device.type == "cuda", "warmup_s": warm_s, "cfg_forward_ms": _ms(cfg_s),
           "cond_forward_ms": _ms(cond_s), "decode_ms": _ms(decode_s)}
    fwd = flops_per_sample(dit)
    peak = peak_for(device_info(device), cfg["precision"], cfg["tf32"])
    out["cfg_forward_tflops"] = 2 * batch * fwd / cfg_s / 1e12 if guided else None
    out["cfg_forward_mfu"] = out["cfg_forward_tflops"] / peak if guided and peak else None
    for name, skip in (("skip_uncond", True), ("full_cfg", False)):
        lat_s = plan_seconds(steps, skip)
        out[f"latents_images_per_s_{name}"] = batch / lat_s
        out[f"images_per_s_{name}"] = batch / (lat_s + decode_s)
    chosen = "skip_uncond" if cfg["skip_uncond"] else "full_cfg"
    out["latents_images_per_s"] = out[f"latents_images_per_s_{chosen}"]
    out["images_per_s"] = out[f"images_per_s_{chosen}"]

    out["e2e"] = None
    if cfg["e2e_steps"]:
        n = cfg["e2e_steps"]

        def run():
            return sample_latents(model, labels, steps=n, cfg_scale=cfg_scale, cfg_interval_start=start,
                                  timestep_shift=shift, noise=x, autocast_dtype=amp, skip_uncond=cfg["skip_uncond"])

        # one untimed run: CUDA-graph trees record the cond -> guided sequence on its first pass
        lat_s = statistics.median(time_calls(run, device, warmup=1, repeats=cfg["repeats"]))
        out["e2e"] = {"steps": n, "latents_ms": _ms(lat_s), "latents_ms_estimate": _ms(plan_seconds(n, cfg["skip_uncond"])),
                      "latents_images_per_s": batch / lat_s, "images_per_s": batch / (lat_s + decode_s)}
    return out


# ----------------------------------------------------------------------------- tokenizer

def bench_tokenizer_section(cfg: dict, device: torch.device) -> dict:
    """`mdgen.bench_tokenizer.benchmark_tokenizer` at this run's settings. Keys: its own (batch,
    dtype, compiled, channels_last, encode_images_per_s, decode_images_per_s, ...) and image_size."""
    model = None
    if cfg["quick"]:
        torch.manual_seed(cfg["seed"])
        with torch.device(device):
            model = AutoencoderKL(**QUICK_TOKENIZER)
    r = bench_tokenizer.benchmark_tokenizer(
        batch=cfg["batch"]["tokenizer"], dtype=cfg["precision"], compile=cfg["compile"],
        channels_last=cfg["channels_last"], device=device, repeats=cfg["repeats"], warmup=max(1, cfg["warmup"]),
        image_size=cfg["image_size"], model=model)
    r["image_size"] = cfg["image_size"]
    return r


RUNNERS = {"train": bench_train, "sample": bench_sample, "tokenizer": bench_tokenizer_section}


# ----------------------------------------------------------------------------- report

def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(report: dict) -> str:
    s, dev = report["settings"], report["device"]
    head = (f"mdgen bench: {dev['name']} ({dev['type']}), torch {report['torch']}, {s['model']}"
            f"{' (quick)' if s['quick'] else ''}, {s['precision']}, compile {'on' if s['compile'] else 'off'}, "
            f"sdpa {s['sdpa']}, median of {s['repeats']}")
    rows = [("section", "setting", "ms", "throughput", "TFLOP/s", "% peak")]
    res = report["results"]
    if "train" in res:
        r = res["train"]
        if "error" in r:
            rows.append(("train", "FAILED", "-", r["error"][:60], "-", "-"))
        else:
            rows.append(("train", f"batch {r['batch']}, {'compiled' if r['compiled'] else 'eager'}, ema {s['ema']}, "
                         f"{'fused' if s['fused_adamw'] else 'foreach'} AdamW",
                         _fmt(r["step_ms"], ".2f"), f"{r['samples_per_s']:.1f} samples/s", _fmt(r["tflops"], ".3g"),
                         _fmt(None if r["mfu"] is None else 100 * r["mfu"])))
    if "sample" in res:
        r = res["sample"]
        if "error" in r:
            rows.append(("sample", "FAILED", "-", r["error"][:60], "-", "-"))
        else:
            mode = "compiled" + (" +graphs" if r["cuda_graphs"] else "") if r["compiled"] else "eager"
            if r["cfg_forward_ms"] is not None:
                rows.append(("sample", f"one CFG forward, {r['batch']} images ({2 * r['batch']} rows), {mode}",
                             _fmt(r["cfg_forward_ms"], ".2f"), "-", _fmt(r["cfg_forward_tflops"], ".3g"),
                             _fmt(None if r["cfg_forward_mfu"] is None else 100 * r["cfg_forward_mfu"])))
            rows.append(("sample", f"one cond forward, {r['batch']} images", _fmt(r["cond_forward_ms"], ".2f"),
                         "-", "-", "-"))
            rows.append(("sample", f"decode {r['batch']} images", _fmt(r["decode_ms"], ".2f"), "-", "-", "-"))
            for name, label in (("skip_uncond", f"skip uncond ({r['guided_steps']} guided)"),
                                ("full_cfg", "both halves every step")):
                rows.append(("sample", f"{r['steps']} NFE, cfg {s['cfg_scale']} from t>={s['cfg_interval_start']}, "
                             f"{label}", "-", f"{r[f'latents_images_per_s_{name}']:.2f} img/s latents, "
                             f"{r[f'images_per_s_{name}']:.2f} decoded", "-", "-"))
            if r["e2e"]:
                e = r["e2e"]
                rows.append(("sample", f"measured: {e['steps']} steps end to end "
                             f"({'skip' if r['skip_uncond'] else 'full'}; estimate {e['latents_ms_estimate']:.1f} ms)",
                             _fmt(e["latents_ms"], ".1f"), f"{e['latents_images_per_s']:.2f} img/s latents, "
                             f"{e['images_per_s']:.2f} decoded", "-", "-"))
    if "tokenizer" in res:
        r = res["tokenizer"]
        if "error" in r:
            rows.append(("tokenizer", "FAILED", "-", r["error"][:60], "-", "-"))
        else:
            setting = (f"batch {r['batch']} at {r['image_size']}px, {r['dtype']}, "
                       f"{'compiled' if r['compiled'] else 'eager'}{', channels_last' if r['channels_last'] else ''}")
            rows.append(("tokenizer", setting, "-", f"encode {r['encode_images_per_s']:.1f} img/s, "
                         f"decode {r['decode_images_per_s']:.1f} img/s", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 4, 5}  # numeric columns
    lines = [head] + ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mdgen bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--what", choices=WHATS + ("all",), default="all")
    p.add_argument("--model", choices=list(LightningDiT_configs), metavar="NAME",
                   help=f"registered DiT size: {', '.join(LightningDiT_configs)} (default LightningDiT-B/1; "
                        f"--quick: {QUICK_MODEL} shrunk to {QUICK_DIT})")
    p.add_argument("--batch", type=int, help="batch of every section (default GPU: train 256, sample 256 images, "
                                             "tokenizer 64; CPU: 4, 4, 2)")
    p.add_argument("--precision", choices=list(PRECISIONS), help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action=bool_flag, help="whole-model torch.compile (default: on for CUDA)")
    p.add_argument("--cuda-graphs", action=bool_flag, default=False,
                   help="sampling with compile mode reduce-overhead (CUDA graphs); needs --compile")
    p.add_argument("--sdpa", choices=SDPA_BACKENDS, default="auto", help="attention kernel (default auto)")
    p.add_argument("--tf32", action=bool_flag, help="TF32 for fp32 matmuls/convs (default: on for CUDA)")
    p.add_argument("--fused-adamw", action=bool_flag, help="fused AdamW (default: on for CUDA)")
    p.add_argument("--ema", choices=("foreach", "loop"), default="foreach")
    p.add_argument("--data", choices=("device", "host"), default="device")
    p.add_argument("--host-sync", action=bool_flag, default=False, help="read the loss on the host every step")
    p.add_argument("--channels-last", action=bool_flag, help="NHWC tokenizer (default: on for CUDA)")
    p.add_argument("--steps", "--nfe", dest="steps", type=int,
                   help="Euler steps = NFE for the images/s figures (default 250 on GPU, 8 on CPU, 4 --quick)")
    p.add_argument("--e2e-steps", type=int,
                   help="steps of the end-to-end sampling run, 0 to skip (default: --steps on CPU, 25 on GPU)")
    p.add_argument("--cfg-scale", type=float, default=2.0, help="guidance scale; 1 = none (default 2.0)")
    p.add_argument("--cfg-interval-start", type=float, default=0.1, help="no guidance while t < this (default 0.1)")
    p.add_argument("--timestep-shift", type=float, default=0.3)
    p.add_argument("--skip-uncond", action=bool_flag, default=True,
                   help="skip the unconditional half outside the guidance interval (default on)")
    p.add_argument("--repeats", type=int, help="timed rounds, median reported (default 5 on GPU, 3 on CPU, 2 --quick)")
    p.add_argument("--iters", type=int, help="calls per timed round (default 5 on GPU, 1 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed calls first, compilation among them (default 3 GPU, 1 CPU)")
    p.add_argument("--quick", action="store_true", help="tiny model and tokenizer: seconds on a CPU")
    p.add_argument("--device", help="default cuda when available, else cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the report as JSON here")
    return p


def resolve(args: argparse.Namespace, device: torch.device, parser: argparse.ArgumentParser) -> dict:
    """Every setting made explicit: device-dependent defaults filled in (fast paths on for CUDA)."""
    cuda = device.type == "cuda"
    full_size = cuda and not args.quick

    def on_for_cuda(v):
        return cuda if v is None else v

    batch = {"train": 256, "sample": 256, "tokenizer": 64} if full_size else {"train": 4, "sample": 4, "tokenizer": 2}
    if args.batch is not None:
        batch = dict.fromkeys(batch, args.batch)
    steps = args.steps or (250 if full_size else 4 if args.quick else 8)
    cfg = {
        "what": args.what, "model": args.model or (QUICK_MODEL if args.quick else "LightningDiT-B/1"),
        "quick": args.quick, "batch": batch, "precision": args.precision or ("bf16" if cuda else "fp32"),
        "compile": on_for_cuda(args.compile), "cuda_graphs": args.cuda_graphs, "sdpa": args.sdpa,
        "tf32": on_for_cuda(args.tf32), "fused_adamw": on_for_cuda(args.fused_adamw), "ema": args.ema,
        "data": args.data, "host_sync": args.host_sync, "channels_last": on_for_cuda(args.channels_last),
        "steps": steps, "e2e_steps": args.e2e_steps if args.e2e_steps is not None else (min(steps, 25) if cuda else steps),
        "cfg_scale": args.cfg_scale, "cfg_interval_start": args.cfg_interval_start,
        "timestep_shift": args.timestep_shift, "skip_uncond": args.skip_uncond,
        "repeats": args.repeats or (5 if full_size else 2 if args.quick else 3),
        "iters": args.iters or (5 if full_size else 1),
        "warmup": args.warmup if args.warmup is not None else (3 if cuda else 1),
        "image_size": QUICK_IMAGE_SIZE if args.quick else IMAGE_SIZE, "seed": args.seed, "device": str(device),
    }
    if cfg["cuda_graphs"] and not cfg["compile"]:
        parser.error("--cuda-graphs runs through torch.compile mode 'reduce-overhead': add --compile")
    for key in ("repeats", "iters", "steps"):
        if cfg[key] < 1:
            parser.error(f"--{key} must be >= 1, got {cfg[key]}")
    if min(batch.values()) < 1 or cfg["e2e_steps"] < 0 or cfg["warmup"] < 0:
        parser.error("--batch must be >= 1, --e2e-steps and --warmup >= 0")
    return cfg


def run(argv: list[str] | None = None) -> dict:
    """Parse argv, run the chosen sections, return the report (what --out writes)."""
    parser = build_parser()
    return _run(parser.parse_args(argv), parser)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = resolve(args, device, parser)
    configure_backends(device, cfg["tf32"])
    report = {"device": device_info(device), "torch": torch.__version__, "cuda": torch.version.cuda,
              "python": platform.python_version(), "settings": cfg, "results": {}}
    with sdpa_backend(cfg["sdpa"]):
        for what in WHATS if args.what == "all" else (args.what,):
            try:
                report["results"][what] = RUNNERS[what](cfg, device)
            except Exception as e:  # noqa: BLE001 -- one failed section (OOM, say) must not lose the others
                traceback.print_exc()
                report["results"][what] = {"error": f"{type(e).__name__}: {e}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the next section starts from a clean allocator
    return report


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    report = _run(args, parser)
    print(format_table(report), flush=True)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        print(f"bench: report -> {args.out}")
    return 1 if any("error" in r for r in report["results"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
