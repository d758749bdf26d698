"""`mdgen bench --what train`: the training step `mdgen train` runs, timed.

The model is `mdgen.dit.build_dit`'s, wrapped in `mdgen.dit_training.FlowModule` with params.yaml's
(--params) `model` and `train` sections and the benchmark's flags over them. The step is the module's own
loss, gradient clipping and EMA; only the optimizer is built here, so that fused and foreach AdamW
can be compared, and upstream's per-tensor EMA loop lives here as the plain path it is measured against.
"""
from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import torch

from mdgen.bench.common import (PRECISIONS, device_info, dit_config, dit_kwargs, ms, peak_for, time_calls,
                                warm_compiled)
from mdgen.bench.flops import flops_per_sample
from mdgen.dit import LightningDiT, build_dit
from mdgen.dit_training import FlowModule
from mdgen.params import ModelConfig, ParamsError, TrainConfig, read


def load_train_config(params_path: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """params.yaml's `model` and `train` sections; a missing or invalid file exits with one line naming it."""
    try:
        p = read(["model", "train"], params_path)
    except ParamsError as e:
        raise SystemExit(f"mdgen bench: {e}; the train section reads model.* and train.* from it") from None
    return p["model"], p["train"]


def bench_config(model: ModelConfig, config: TrainConfig, cfg: dict) -> tuple[ModelConfig, TrainConfig]:
    """The params.yaml sections with this run's flags over them: model, attention, batch, compile, precision."""
    model = dataclasses.replace(model, name=cfg["model"], overrides={**model.overrides, **dit_kwargs(cfg)})
    config = dataclasses.replace(config, batch_size=cfg["batch"]["train"], compile=cfg["compile"],
                                 precision="bf16-mixed" if cfg["precision"] == "bf16" else "32-true")
    return model, config


def build_model(model: ModelConfig) -> LightningDiT:
    """The network `mdgen train` builds for the `model` section (the data's label count and latent shape aside)."""
    return build_dit(model.name, **{"class_dropout_prob": model.class_dropout_prob, "use_qknorm": model.use_qknorm,
                                    "attention": model.attention, **model.overrides})


def make_adamw(module: FlowModule, fused: bool) -> torch.optim.AdamW:
    """`FlowModule.configure_optimizers`' AdamW (fused on CUDA there), with the kernel choice a flag here."""
    c = module.config
    return torch.optim.AdamW(module.model.parameters(), lr=c.lr, weight_decay=c.weight_decay, betas=c.betas,
                             fused=fused)


@torch.no_grad()
def ema_update_loop(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Upstream's EMA (DiT/LightningDiT `train.py` `update_ema`): a mul_ and an add_ per tensor.

    The plain path that `--ema loop` measures against `FlowModule.update_ema`'s single fused lerp.
    """
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def train_step(module: FlowModule, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor], *,
               autocast_dtype: torch.dtype | None = None, ema: str = "foreach", host_sync: bool = False) -> torch.Tensor:
    """One optimizer step of a `FlowModule` as Lightning's automatic optimisation runs it.

    Loss under autocast (bf16-mixed: fp32 weights, bf16 matmuls), backward outside it, gradient
    clipping at `train.grad_clip` (Lightning's gradient_clip_val), optimizer step, gradients
    dropped, EMA update. Returns the detached loss without reading it, so the host never waits for
    the device; host_sync=True reads it every step, as upstream's logging does.
    """
    if ema not in ("foreach", "loop"):
        raise ValueError(f"ema {ema!r}: expected 'foreach' or 'loop'")
    device_type = batch[0].device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        loss = module.train_loss(batch)
    loss.backward()
    if module.config.grad_clip:
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), module.config.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if ema == "foreach":
        module.update_ema()
    else:
        ema_update_loop(module.ema, module.model, module.config.ema_decay)
    if host_sync:
        loss.item()
    return loss.detach()


def _batches(cfg: dict, device: torch.device):
    """get_batch() for the step: random latents and labels on the device, or (--data host) copied
    in from pinned host memory every call, as a DataLoader with pin_memory hands them over."""
    batch, dit = cfg["batch"]["train"], dit_config(cfg)
    gen = torch.Generator(device).manual_seed(cfg["seed"])
    shape = (batch, dit["in_channels"], dit["input_size"], dit["input_size"])
    x1 = torch.randn(shape, generator=gen, device=device)
    y = torch.randint(0, dit["num_classes"], (batch,), generator=gen, device=device)
    if cfg["data"] != "host":
        return lambda: (x1, y)
    pin = device.type == "cuda"
    x1_host, y_host = (x1.cpu().pin_memory(), y.cpu().pin_memory()) if pin else (x1.cpu(), y.cpu())
    return lambda: (x1_host.to(device, non_blocking=True), y_host.to(device, non_blocking=True))


def bench_train(cfg: dict, device: torch.device, config: tuple[ModelConfig, TrainConfig]) -> dict:
    """Training-step throughput. `config`: params.yaml's sections (`load_train_config`). Keys: batch, compiled,
    warmup_s, step_ms, step_ms_repeats, samples_per_s, fwd_gflops_per_sample, tflops (3 x forward
    FLOPs x samples/s), peak_tflops, mfu (None where the peak is unknown), loss (the last step's)."""
    model_config, config = bench_config(*config, cfg)
    batch, amp = config.batch_size, PRECISIONS[cfg["precision"]]
    get_batch = _batches(cfg, device)

    def build(compile: bool):
        torch.manual_seed(cfg["seed"])
        with torch.device(device):  # weights made where they run: no host init and copy
            module = FlowModule(build_model(model_config), dataclasses.replace(config, compile=compile), cfg["seed"])
        module.to(device).train()  # .to also records the device in Lightning's bookkeeping
        return module, make_adamw(module, fused=cfg["fused_adamw"])

    last = {}

    def step(state) -> None:
        module, opt = state
        last["loss"] = train_step(module, opt, get_batch(), autocast_dtype=amp, ema=cfg["ema"],
                                  host_sync=cfg["host_sync"])

    state, compiled, warm_s = warm_compiled(
        build, lambda s: [step(s) for _ in range(max(1, cfg["warmup"]))], cfg["compile"], device, "bench train")
    times = time_calls(lambda: step(state), device, warmup=0, repeats=cfg["repeats"], iters=cfg["iters"])
    step_s = statistics.median(times)
    fwd = flops_per_sample(state[0].model)
    tflops = 3 * fwd * batch / step_s / 1e12
    peak = peak_for(device_info(device), cfg["precision"], cfg["tf32"])
    return {"batch": batch, "compiled": compiled, "warmup_s": warm_s, "step_ms": ms(step_s),
            "step_ms_repeats": [ms(t) for t in times], "samples_per_s": batch / step_s,
            "fwd_gflops_per_sample": fwd / 1e9, "tflops": tflops, "peak_tflops": peak,
            "mfu": tflops / peak if peak else None, "loss": float(last["loss"])}
