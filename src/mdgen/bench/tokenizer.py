"""Tokenizer throughput: encode / decode images/s of the full-size f16d32 VA-VAE at 256x256.

Random weights (speed does not depend on them), fp32 or bf16 autocast, eager or torch.compile,
optional channels_last. Warm-up calls are excluded, each timed call is bracketed by a device
synchronise, and the median over repeats is reported. `mdgen bench --what tokenizer` runs one
setting (`bench_section`); this module's own command sweeps them:

    python -m mdgen.bench.tokenizer                      # CPU: batch 2, 1 repeat, fp32 eager
    python -m mdgen.bench.tokenizer --dtypes fp32,bf16 --compile both --channels-last both   # GPU sweep
"""
from __future__ import annotations

import argparse
import statistics

import torch

from mdgen.accel import compiled_or_eager
from mdgen.bench.common import QUICK_TOKENIZER, time_calls
from mdgen.tokenizer import AutoencoderKL

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def benchmark_tokenizer(batch: int = 2, dtype: str = "fp32", compile: bool = False, channels_last: bool = False,
                        device: str | torch.device = "cpu", repeats: int = 1, warmup: int = 1,
                        image_size: int = 256, model: AutoencoderKL | None = None) -> dict:
    """Encode and decode images/s for one setting; `model` defaults to a random f16d32 on `device`.

    With `compile`, encode and decode are wrapped in torch.compile; if compilation fails the run
    falls back to eager (`mdgen.accel.compiled_or_eager` warns), and the result says `compiled: False`.
    """
    assert dtype in DTYPES, f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}"
    device = torch.device(device)
    if model is None:
        with torch.device(device):
            model = AutoencoderKL()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.eval().requires_grad_(False).to(memory_format=fmt)
    gen = torch.Generator(device).manual_seed(0)
    x = (torch.rand(batch, 3, image_size, image_size, generator=gen, device=device) * 2 - 1).to(memory_format=fmt)
    f = model.downsample_factor
    z = torch.randn(batch, model.config["embed_dim"], image_size // f, image_size // f, generator=gen, device=device)
    inputs = {"encode": x, "decode": z.to(memory_format=fmt)}

    def encode(v):
        return model.encode(v).sample(generator=gen)  # what the extract stage does

    def run(fn):
        def wrapped(v):
            with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
                return fn(v)
        return wrapped

    eager = {"encode": encode, "decode": model.decode}
    fns = dict(eager)
    compiled = False
    if compile:
        fns = {k: torch.compile(fn) for k, fn in eager.items()}
        compiled = compiled_or_eager(lambda: [run(fn)(inputs[k]) for k, fn in fns.items()],  # compiles
                                     lambda: fns.update(eager), "bench tokenizer")
    secs = {k: statistics.median(time_calls(lambda k=k: run(fns[k])(inputs[k]), device, warmup=warmup,
                                            repeats=repeats))
            for k in fns}
    return {"device": str(device), "dtype": dtype, "compiled": compiled, "channels_last": channels_last,
            "batch": batch, "repeats": repeats, "encode_images_per_s": batch / secs["encode"],
            "decode_images_per_s": batch / secs["decode"]}


def bench_section(cfg: dict, device: torch.device) -> dict:
    """`benchmark_tokenizer` at an `mdgen bench` run's settings. Keys: its own (batch, dtype,
    compiled, channels_last, encode_images_per_s, decode_images_per_s, ...) and image_size."""
    model = None
    if cfg["quick"]:
        torch.manual_seed(cfg["seed"])
        with torch.device(device):
            model = AutoencoderKL(**QUICK_TOKENIZER)
    r = benchmark_tokenizer(
        batch=cfg["batch"]["tokenizer"], dtype=cfg["precision"], compile=cfg["compile"],
        channels_last=cfg["channels_last"], device=device, repeats=cfg["repeats"], warmup=max(1, cfg["warmup"]),
        image_size=cfg["image_size"], model=model)
    r["image_size"] = cfg["image_size"]
    return r


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mdgen.bench.tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="default 2 on CPU, 32 on GPU")
    parser.add_argument("--repeats", type=int, help="timed calls, median reported; default 1 on CPU, 10 on GPU")
    parser.add_argument("--warmup", type=int, help="untimed calls first; default 1 on CPU, 3 on GPU")
    parser.add_argument("--dtypes", default=None, help="comma list of fp32,bf16; default fp32 on CPU, both on GPU")
    parser.add_argument("--compile", choices=["off", "on", "both"], help="default off on CPU, both on GPU")
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="off")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest conv algorithms
    batch = args.batch or (32 if gpu else 2)
    repeats = args.repeats or (10 if gpu else 1)
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    dtypes = (args.dtypes or ("fp32,bf16" if gpu else "fp32")).split(",")
    both = {"off": [False], "on": [True], "both": [False, True]}
    compiles, layouts = both[args.compile or ("both" if gpu else "off")], both[args.channels_last]

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
