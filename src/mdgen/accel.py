"""How mdgen uses the hardware it finds: precision choices and torch.compile with an eager fallback.

One place for the rules that train, sample, extract and `mdgen bench` share, so a card or CPU
gets the same answer everywhere.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

AUTOCAST_CHOICES = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), as /proc/cpuinfo lists it.

    There, bf16 matmuls run through oneDNN's bf16 kernels and beat fp32; without those units bf16
    is emulated and far slower than fp32 (benchmarks/README.md), so anything but Linux with the
    flags says no.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for inference on `device`: None (plain fp32) or torch.bfloat16.

    precision: `fp32`, `bf16`, or `auto` = bf16 on CUDA and on a CPU with native bf16, else fp32.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(AUTOCAST_CHOICES)}")
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def lightning_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for `train.precision`; `auto`: bf16-mixed on a GPU and on a CPU with
    native bf16 (see `cpu_has_native_bf16`), else 32-true. Any other value is kept as given."""
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed"
    return "bf16-mixed" if accelerator in ("auto", "cpu") and cpu_has_native_bf16() else "32-true"


def compiled_or_eager(first_call: Callable[[], object], go_eager: Callable[[], None], what: str) -> bool:
    """Make the first call through a torch.compile'd object; if compiling fails, go eager.

    torch.compile fails lazily, at the first call (no C++ compiler, an unsupported op, an old GPU
    for Triton), so without this a run asked to compile would die at its first step. On failure
    this warns (naming `what`), calls `go_eager()` and returns False; out of memory is not a
    compile failure and is raised. Returns whether the object stays compiled.
    """
    try:
        first_call()
        return True
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 -- any backend/toolchain failure: the eager path is still correct
        reason = str(e).splitlines()[0] if str(e) else ""
        log.warning("%s: torch.compile failed (%s: %s); running eager instead", what, type(e).__name__, reason)
        print(f"{what}: torch.compile failed ({type(e).__name__}); running eager instead")
        go_eager()
        return False
