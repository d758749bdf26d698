"""`mdgen bench`: training, sampling and tokenizer throughput on one device, as a table and as JSON.

    mdgen bench --quick --what all --out bench.json      # tiny configs, seconds on a CPU (CI runs this)
    mdgen bench --what train --model LightningDiT-XL/1 --batch 128 --precision bf16 --compile
    mdgen bench --what sample --batch 256 --steps 250 --no-skip-uncond     # upstream's CFG cost
    PYTHONPATH=src python -m mdgen.bench ...                                # without installing

Weights and data are random (speed does not depend on them). Warm-up calls, compilation included,
are not timed; the device is synchronised around each timed round of --iters calls; figures are
the median over --repeats rounds.

- train: one optimizer step of `mdgen.dit_training.FlowModule` around `mdgen.dit.build_dit`'s model,
  configured by --params' `TrainConfig` (lr, betas, weight decay, grad clip, EMA decay, loss; the
  model, batch, compile and precision come from the flags), as Lightning's loop runs it: flow
  loss through the (compiled) model under autocast (`FlowModule.train_loss`), backward, gradient
  clipping, AdamW step, EMA update (`FlowModule.update_ema`); see `mdgen.bench.train.train_step`.
  samples/s = batch / step time. Model TFLOP/s = 3 x `mdgen.bench.flops.flops_per_sample` x
  samples/s (forward, plus a backward of twice the forward's matmul work); `mfu` = that /
  `peak_tflops`, the device's dense datasheet peak for the precision (None where unknown, e.g. CPU).
- sample: `mdgen.ode.velocity_fn` for --batch images, timed per velocity evaluation: one
  guided step (`cfg_forward_ms`, the model on 2 x batch rows) and one conditional step
  (`cond_forward_ms`). With Euler one step is one evaluation, so --steps is the NFE: images/s at
  that NFE follow from the step plan: `guided_steps` steps inside the guidance interval with both
  halves and the rest conditional only (skip_uncond, mdgen's sampler), or both halves at every step
  (full_cfg, upstream); latents only, and with the tokenizer decode (`decode_ms`: eager, in chunks
  of `mdgen.bench.sample.DECODE_CHUNK`, --precision and --channels-last; its compiled speed is the tokenizer section's).
  `e2e` times `sample_latents` end to end for --e2e-steps steps (0: skipped), plus the decode.
- tokenizer: `mdgen.bench.tokenizer.benchmark_tokenizer` (encode with posterior sampling, decode).

Fast paths, each behind a flag so that before/after run on the same card. Defaults: on for CUDA,
the plain path on CPU; the ones marked * are on everywhere.
  --compile          whole-model torch.compile (DiT forward; tokenizer encode/decode); a backend
                     failure falls back to eager with a warning, and the result says compiled: false
  --precision bf16   autocast to bf16, fp32 weights and optimizer (Lightning's bf16-mixed)
  --attention        the DiT's attention (model.attention): auto* (plain on a CPU, fused elsewhere),
                     fused (F.scaled_dot_product_attention, upstream's), plain (the product written out)
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
failed holds {"error": "..."} and the command exits 1. Keys per section: see
`mdgen.bench.train.bench_train`, `mdgen.bench.sample.bench_sample`, `mdgen.bench.tokenizer.bench_section`.
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import traceback

import torch

from mdgen.bench.common import (IMAGE_SIZE, PRECISIONS, QUICK_DIT, QUICK_IMAGE_SIZE, QUICK_MODEL, SDPA_BACKENDS,
                                configure_backends, device_info, sdpa_backend)
from mdgen.bench.report import format_table
from mdgen.dit import ATTENTION, LightningDiT_configs
from mdgen.errors import OutputPathError
from mdgen.io import atomic_path, check_output_path

WHATS = ("train", "sample", "tokenizer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mdgen bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--what", choices=WHATS + ("all",), default="all", help="which section to time (default: all)")
    p.add_argument("--model", choices=list(LightningDiT_configs), metavar="NAME",
                   help=f"registered DiT size: {', '.join(LightningDiT_configs)} (default LightningDiT-B/1; "
                        f"--quick: {QUICK_MODEL} shrunk to {QUICK_DIT})")
    p.add_argument("--batch", type=int, help="batch of every section (default GPU: train 256, sample 256 images, "
                                             "tokenizer 64; CPU: 4, 4, 2)")
    p.add_argument("--precision", choices=list(PRECISIONS), help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action=bool_flag, help="whole-model torch.compile (default: on for CUDA)")
    p.add_argument("--cuda-graphs", action=bool_flag, default=False,
                   help="sampling with compile mode reduce-overhead (CUDA graphs); needs --compile")
    p.add_argument("--attention", choices=ATTENTION, default="auto",
                   help="the DiT's attention: plain on a CPU and fused elsewhere (auto), or either")
    p.add_argument("--sdpa", choices=SDPA_BACKENDS, default="auto", help="kernel of the fused attention (default auto)")
    p.add_argument("--tf32", action=bool_flag, help="TF32 for fp32 matmuls/convs (default: on for CUDA)")
    p.add_argument("--fused-adamw", action=bool_flag, help="fused AdamW (default: on for CUDA)")
    p.add_argument("--ema", choices=("foreach", "loop"), default="foreach",
                   help="EMA update: one fused lerp over all tensors (mdgen's), or upstream's loop per tensor")
    p.add_argument("--data", choices=("device", "host"), default="device",
                   help="training batches already on the device, or copied in from pinned host memory each step")
    p.add_argument("--host-sync", action=bool_flag, default=False, help="read the loss on the host every step")
    p.add_argument("--channels-last", action=bool_flag, help="NHWC tokenizer (default: on for CUDA)")
    p.add_argument("--steps", "--nfe", dest="steps", type=int,
                   help="Euler steps = NFE for the images/s figures (default 250 on GPU, 8 on CPU, 4 --quick)")
    p.add_argument("--e2e-steps", type=int,
                   help="steps of the end-to-end sampling run, 0 to skip (default: --steps on CPU, 25 on GPU)")
    p.add_argument("--cfg-scale", type=float, default=2.0, help="guidance scale; 1 = none (default 2.0)")
    p.add_argument("--cfg-interval-start", type=float, default=0.1, help="no guidance while t < this (default 0.1)")
    p.add_argument("--timestep-shift", type=float, default=0.3, help="the sampling grid's bend (default 0.3)")
    p.add_argument("--skip-uncond", action=bool_flag, default=True,
                   help="skip the unconditional half outside the guidance interval (default on)")
    p.add_argument("--repeats", type=int, help="timed rounds, median reported (default 5 on GPU, 3 on CPU, 2 --quick)")
    p.add_argument("--iters", type=int, help="calls per timed round (default 5 on GPU, 1 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed calls first, compilation among them (default 3 GPU, 1 CPU)")
    p.add_argument("--quick", action="store_true", help="tiny model and tokenizer: seconds on a CPU")
    p.add_argument("--device", help="default cuda when available, else cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and data (default 0)")
    p.add_argument("--params", default="params.yaml",
                   help="parameters file whose model.*, train.* and seed configure the train section's "
                        "FlowModule (default: params.yaml); the flags above override model, batch, compile, "
                        "precision and seed")
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
        "compile": on_for_cuda(args.compile), "cuda_graphs": args.cuda_graphs,
        "attention": args.attention, "sdpa": args.sdpa,
        "tf32": on_for_cuda(args.tf32), "fused_adamw": on_for_cuda(args.fused_adamw), "ema": args.ema,
        "data": args.data, "host_sync": args.host_sync, "channels_last": on_for_cuda(args.channels_last),
        "steps": steps, "e2e_steps": args.e2e_steps if args.e2e_steps is not None else (min(steps, 25) if cuda else steps),
        "cfg_scale": args.cfg_scale, "cfg_interval_start": args.cfg_interval_start,
        "timestep_shift": args.timestep_shift, "skip_uncond": args.skip_uncond,
        "repeats": args.repeats or (5 if full_size else 2 if args.quick else 3),
        "iters": args.iters or (5 if full_size else 1),
        "warmup": args.warmup if args.warmup is not None else (3 if cuda else 1),
        "image_size": QUICK_IMAGE_SIZE if args.quick else IMAGE_SIZE, "seed": args.seed, "device": str(device),
        "params": args.params,
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
    whats = WHATS if args.what == "all" else (args.what,)
    sections = _sections(cfg, whats)  # before any timing: a bad --params stops here
    configure_backends(device, cfg["tf32"])
    report = {"device": device_info(device), "torch": torch.__version__, "cuda": torch.version.cuda,
              "python": platform.python_version(), "settings": cfg, "results": {}}
    with sdpa_backend(cfg["sdpa"]):
        for what in whats:
            try:
                report["results"][what] = sections[what](cfg, device)
            except Exception as e:  # noqa: BLE001 -- one failed section (OOM, say) must not lose the others
                traceback.print_exc()
                report["results"][what] = {"error": f"{type(e).__name__}: {e}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the next section starts from a clean allocator
    return report


def _sections(cfg: dict, whats: tuple[str, ...]) -> dict:
    """what -> fn(cfg, device) -> its results. Imported only when chosen (train imports Lightning);
    train's TrainConfig is read from --params here."""
    sections = {}
    if "train" in whats:
        from mdgen.bench import train
        config = train.load_train_config(cfg["params"])
        sections["train"] = functools.partial(train.bench_train, config=config)
    if "sample" in whats:
        from mdgen.bench.sample import bench_sample
        sections["sample"] = bench_sample
    if "tokenizer" in whats:
        from mdgen.bench.tokenizer import bench_section
        sections["tokenizer"] = bench_section
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out:  # before minutes of benchmarks, not after
        try:
            check_output_path(args.out)
        except OutputPathError as e:
            parser.error(f"--out: {e}")
    report = _run(args, parser)
    print(format_table(report), flush=True)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        print(f"bench: report -> {args.out}")
    return 1 if any("error" in r for r in report["results"].values()) else 0
