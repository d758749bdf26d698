"""Tokenizer throughput: encode / decode images/s of the full-size f16d32 VA-VAE at 256x256.

Random weights (speed does not depend on them), fp32 or bf16 autocast, eager or torch.compile,
optional channels_last. Warm-up calls are excluded, each timed call is bracketed by a device
synchronise, and the median over repeats is reported.

    python -m mdgen.bench_tokenizer                      # CPU: batch 2, 1 repeat, fp32 eager (< 1 min)
    python -m mdgen.bench_tokenizer --dtypes fp32,bf16 --compile both --channels-last both   # GPU sweep
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from mdgen.tokenizer import AutoencoderKL

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


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


def benchmark_tokenizer(batch: int = 2, dtype: str = "fp32", compile: bool = False, channels_last: bool = False,
                        device: str | torch.device = "cpu", repeats: int = 1, warmup: int = 1,
                        image_size: int = 256, model: AutoencoderKL | None = None) -> dict:
    """Encode and decode images/s for one setting; `model` defaults to a random f16d32 on `device`.

    With `compile`, encode and decode are wrapped in torch.compile; if compilation fails the run
    falls back to eager with a warning, and the result says `compiled: False`.
    """
    assert dtype in DTYPES, f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}"
    device = torch.device(device)
    if model is None:
        with torch.device(device):
            model = AutoencoderKL()
    model = model.eval().requires_grad_(False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    gen = torch.Generator(device).manual_seed(0)
    x = (torch.rand(batch, 3, image_size, image_size, generator=gen, device=device) * 2 - 1).to(memory_format=fmt)
    f = model.downsample_factor
    z = torch.randn(batch, model.config["embed_dim"], image_size // f, image_size // f, generator=gen, device=device)
    z = z.to(memory_format=fmt)

    def encode(v):
        return model.encode(v).sample(generator=gen)  # what the extract stage does

    def decode(v):
        return model.decode(v)

    def run(fn):
        def wrapped(v):
            with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
                return fn(v)
        return wrapped

    compiled = False
    if compile:
        try:
            enc_c, dec_c = torch.compile(encode), torch.compile(decode)
            run(enc_c)(x), run(dec_c)(z)  # compilation happens on the first call
            encode, decode, compiled = enc_c, dec_c, True
        except Exception as e:  # any backend/toolchain failure: measure eager rather than nothing
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); benchmarking eager instead")
    enc, dec = run(encode), run(decode)
    enc_s = statistics.median(time_calls(lambda: enc(x), device, warmup=warmup, repeats=repeats))
    dec_s = statistics.median(time_calls(lambda: dec(z), device, warmup=warmup, repeats=repeats))
    return {"device": str(device), "dtype": dtype, "compiled": compiled, "channels_last": channels_last,
            "batch": batch, "repeats": repeats, "encode_images_per_s": batch / enc_s,
            "decode_images_per_s": batch / dec_s}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="default 2 on CPU, 32 on GPU")
    parser.add_argument("--repeats", type=int, help="timed calls, median reported; default 1 on CPU, 10 on GPU")
    parser.add_argument("--warmup", type=int, help="untimed calls first; default 1 on CPU, 3 on GPU")
    parser.add_argument("--dtypes", default=None, help="comma list of fp32,bf16; default fp32 on CPU, both on GPU")
    parser.add_argument("--compile", choices=["off", "on", "both"], help="default off on CPU, both on GPU")
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="off")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest conv algorithms
    batch = args.batch or (32 if gpu else 2)
    repeats = args.repeats or (10 if gpu else 1)
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    dtypes = (args.dtypes or ("fp32,bf16" if gpu else "fp32")).split(",")
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile or ("both" if gpu else "off")]
    layouts = {"off": [False], "on": [True], "both": [False, True]}[args.channels_last]

    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    print(f"f16d32 VA-VAE (69.8 M params), 256x256, random weights, {name}, torch {torch.__version__}, "
          f"batch {batch}, warm-up {warmup}, median of {repeats}")
    print(f"{'dtype':6} {'compile':8} {'ch_last':8} {'encode img/s':>13} {'decode img/s':>13}")
    results = []
    for dtype in dtypes:
        for comp in compiles:
            for cl in layouts:
                r = benchmark_tokenizer(batch=batch, dtype=dtype, compile=comp, channels_last=cl, device=device,
                                        repeats=repeats, warmup=warmup)
                results.append(r)
                mode = "yes" if r["compiled"] else ("FAILED" if comp else "no")
                print(f"{dtype:6} {mode:8} {'yes' if cl else 'no':8} {r['encode_images_per_s']:13.2f} "
                      f"{r['decode_images_per_s']:13.2f}", flush=True)
    return results


if __name__ == "__main__":
    main()
