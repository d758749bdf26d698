"""What every `mdgen bench` section shares: device description and peaks, backend set-up, timing,
compilation with the eager fallback, and the benchmark's model sizes."""
from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable

import torch

from mdgen.accel import AUTOCAST_DTYPES, compiled_or_eager
from mdgen.dit import build_dit

PRECISIONS = {k: AUTOCAST_DTYPES[k] for k in ("fp32", "bf16")}  # the precisions the benchmark compares
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")

# Dense (no sparsity) datasheet peaks in TFLOP/s as (bf16, tf32, fp32), matched in order against the
# CUDA device name. H200 SXM is the H100 SXM chip with more memory, so the same rates. mfu is against
# the datasheet, i.e. conservative (benchmarks/README.md compares it with the measured peak).
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


# ----------------------------------------------------------------------------- device

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


# ----------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; CPU ops are done when they return)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device: torch.device, *, warmup: int, repeats: int, iters: int = 1) -> list[float]:
    """Seconds per call of fn(), one figure per timed round of `iters` calls, after `warmup` untimed calls.

    The device is synchronised before and after each round, and not between the calls of a round, so
    the host can queue the next call while the device runs the last one, as a real loop does.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / iters)
    return times


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def warm_compiled(build: Callable[[bool], object], warm: Callable[[object], None], compile: bool,
                  device: torch.device, what: str) -> tuple[object, bool, float]:
    """(obj, compiled, seconds): obj = build(compile), then warm(obj), where compilation happens.

    torch.compile fails on the first call, not when wrapping; `mdgen.accel.compiled_or_eager` then
    warns, and this rebuilds the object without it and warms again, so a broken toolchain costs the
    speed-up, not the figures. The rebuild happens here, after the failed object is dropped, not in
    the fallback's go_eager (called inside its except block, whose traceback would keep the failed
    model's memory alive).
    """
    t0 = time.perf_counter()
    obj = build(compile)
    if compile:
        def first_call() -> None:
            warm(obj)
            sync(device)

        if compiled_or_eager(first_call, lambda: None, what):
            return obj, True, time.perf_counter() - t0
        del obj
        t0 = time.perf_counter()
        obj = build(False)
    warm(obj)
    sync(device)
    return obj, False, time.perf_counter() - t0


# ----------------------------------------------------------------------------- the DiT

def dit_kwargs(cfg: dict) -> dict:
    """Constructor kwargs over the registered size: upstream's label table, --attention, and the --quick shrink."""
    return {"num_classes": NUM_CLASSES, "attention": cfg["attention"], **(QUICK_DIT if cfg["quick"] else {})}


def dit_config(cfg: dict) -> dict:
    """The resolved LightningDiT config of this run's --model, without allocating or initialising weights."""
    with torch.device("meta"):
        return build_dit(cfg["model"], **dit_kwargs(cfg)).config
