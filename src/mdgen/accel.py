"""How mdgen uses the hardware it finds: precision choices and torch.compile with an eager fallback.

One place for the rules that train, sample, extract and `mdgen bench` share, so a card or CPU
gets the same answer everywhere.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

AUTOCAST_CHOICES = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def set_threads(n: int) -> None:
    """torch intra-op threads for this process (0 keeps torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch on `n` CPU threads inside the block (0 or None: leave torch's choice), the caller's count after it."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def cuda_has_native_bf16(device: torch.device | int | None = None) -> bool:
    """bf16 tensor cores arrived with Ampere (compute capability 8.0): A100, RTX 30xx, L4, H100. T4 (7.5),
    V100 (7.0) and P100 (6.0) emulate bf16, slowly, so mixed precision there means fp16."""
    # no CUDA at all: False, and the Trainer then says that the GPU asked for is not there
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def autocast_dtype(device: torch.device, precision: str = "auto", *, fp16_safe: bool = True) -> torch.dtype | None:
    """The autocast dtype for inference on `device`: None (plain fp32), torch.bfloat16 or torch.float16.

    precision: `fp32`, `bf16`, `fp16`, or `auto` = bf16 where the hardware has it natively (a CUDA card
    of compute capability >= 8.0, a CPU with AVX512-BF16/AMX), fp16 on older CUDA cards, else fp32.
    `fp16_safe=False` (the tokenizer decoder, whose activations can exceed fp16's 65,504) turns an fp16
    choice, `auto`'s included, into fp32.
    """
    if precision not in AUTOCAST_CHOICES:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(AUTOCAST_CHOICES)}")
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if cuda_has_native_bf16(device) else "fp16"
        else:
            precision = "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not fp16_safe:
        return None
    return AUTOCAST_DTYPES[precision]


def dtype_name(dtype: torch.dtype | None) -> str:
    """The precision name of an autocast dtype from `autocast_dtype` (None: fp32)."""
    return next(name for name, d in AUTOCAST_DTYPES.items() if d == dtype)


def lightning_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for `train.precision`. `auto`: on a GPU bf16-mixed where the card has native
    bf16 (compute capability >= 8.0), else 16-mixed (fp16 autocast with loss scaling); on a CPU
    bf16-mixed with native bf16 (see `cpu_has_native_bf16`), else 32-true. Any other value is kept."""
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if cuda_has_native_bf16() else "16-mixed"
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


# torch's vectorised float math kernels (exp, log10, tanh, sin, ...) race on their first call in a process:
# when that call is split across threads, the main thread's share can come out of a less precise path
# (torch.exp off by up to 1.5e-4 relative, where it is otherwise within 1.2e-7), at random. On the pinned
# 2.13.0+cpu build that was one process in six for exp alone, enough to change `extract`'s latents and
# every hash after them. A first call on a tensor too small to be split takes that path once, for all later
# calls; tests/test_accel.py checks it in fresh processes.
SETTLED_OPS = ("exp", "expm1", "exp2", "log", "log1p", "log2", "log10", "sin", "cos", "tan", "tanh", "sinh",
               "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "erf", "erfc", "erfinv", "lgamma",
               "digamma", "sigmoid", "sqrt", "rsqrt", "reciprocal")


def settle_math_kernels() -> None:
    """Call each op of SETTLED_OPS (and pow, atan2, softmax, the activations) once on 64 values, in
    float32, float64 and bfloat16: too few to be split across threads (see the comment above)."""
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.linspace(0.1, 0.9, 64, dtype=dtype)
        for name in SETTLED_OPS:
            getattr(torch, name)(x)
        torch.pow(x, x), torch.pow(x, 2.5), torch.atan2(x, x), torch.softmax(x, 0), torch.log_softmax(x, 0)
        torch.nn.functional.silu(x), torch.nn.functional.gelu(x), torch.nn.functional.gelu(x, approximate="tanh")
        torch.nn.functional.softplus(x), torch.nn.functional.mish(x), torch.nn.functional.elu(x)


settle_math_kernels()  # at import, so before any mdgen code makes its first multi-threaded call
