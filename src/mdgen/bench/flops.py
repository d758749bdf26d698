"""Forward FLOPs of a LightningDiT, counted from its config: the numerator of `mdgen bench`'s
TFLOP/s and mfu figures."""
from __future__ import annotations

import inspect
from collections.abc import Mapping

from mdgen.dit import LightningDiT


def flops_per_sample(model_or_config: LightningDiT | Mapping) -> int:
    """Forward FLOPs for one sample = 2 x multiply-accumulates of every matmul.

    Counted: patch embed (N*C*p^2*D), timestep MLP (256*D + D^2), per block adaLN (6D^2, 4D^2 with
    wo_shift), qkv (3ND^2), attention QK^T and AV (2*N^2*D), out proj (ND^2), FFN (3*N*D*F SwiGLU with
    F = int(2/3*mlp_ratio*D), else 2*N*D*M with M = int(mlp_ratio*D)), final adaLN (2D^2) and linear
    (N*D*p^2*C). Not counted: norms, activations, softmax, RoPE, biases, the embedding lookup.
    Accepts a model or its config dict (LightningDiT.config; missing keys take the constructor defaults).
    Multiply by 3 for a training step (forward + backward), by 2 for a guided sampling step.
    """
    cfg = dict(model_or_config.config if isinstance(model_or_config, LightningDiT) else model_or_config)
    defaults = {k: p.default for k, p in inspect.signature(LightningDiT.__init__).parameters.items()
                if k != "self"}
    unknown = set(cfg) - set(defaults)
    assert not unknown, f"unknown LightningDiT config keys {sorted(unknown)}"
    cfg = {**defaults, **cfg}
    D, p, C = cfg["hidden_size"], cfg["patch_size"], cfg["in_channels"]
    N = (cfg["input_size"] // p) ** 2
    if cfg["use_swiglu"]:
        ffn = 3 * N * D * int(2 / 3 * int(D * cfg["mlp_ratio"]))
    else:
        ffn = 2 * N * D * int(D * cfg["mlp_ratio"])
    block = (4 if cfg["wo_shift"] else 6) * D * D + 3 * N * D * D + 2 * N * N * D + N * D * D + ffn
    macs = N * C * p * p * D + 256 * D + D * D + cfg["depth"] * block + 2 * D * D + N * D * p * p * C
    return 2 * macs
