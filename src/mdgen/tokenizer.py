"""VA-VAE tokenizer: the LDM AutoencoderKL that turns [-1,1] images into latents and back.

Architecture, parameter names and posterior follow hustvl/LightningDiT@2725fed
`tokenizer/autoencoder.py` (itself the CompVis latent-diffusion `Encoder`/`Decoder` with a
diagonal-Gaussian posterior), so the released `vavae-imagenet256-f16d32-dinov2.pt` loads by
copying tensors, not by translating names. The defaults are the f16d32 VA-VAE (69.8 M params):
a 256x256 image becomes a 32x16x16 latent.

Layout: helpers, blocks, Encoder, Decoder, posterior, AutoencoderKL, then checkpoint I/O
(`load_tokenizer`, `save_tokenizer`, `infer_config`).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors import SafetensorError, safe_open

from mdgen.errors import BadFileError, MissingFileError
from mdgen.io import RESTORE_HINT, load_torch_file, save_safetensors

log = logging.getLogger(__name__)


#################################################################################
#                                    Helpers                                    #
#################################################################################

def group_norm(channels: int) -> nn.GroupNorm:
    # upstream `Normalize`: 32 groups, eps 1e-6 (not PyTorch's 1e-5), so every width is a multiple of 32
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    # written as upstream does, not F.silu: the fused kernel rounds differently and alone moves the
    # decoded images by ~1e-5, enough to flip uint8 pixels against the upstream reference
    return x * torch.sigmoid(x)


#################################################################################
#                                    Blocks                                     #
#################################################################################

class ResnetBlock(nn.Module):
    """Pre-norm residual block: (GroupNorm, swish, 3x3 conv) twice, 1x1 `nin_shortcut` when widths differ.

    Upstream also has a timestep projection (`temb_proj`) and a 3x3 `conv_shortcut` option; the
    autoencoder uses neither (temb_ch=0, conv_shortcut=False), so they are left out and no key is lost.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))                   # (N, C_out, H, W)
        h = self.conv2(self.dropout(swish(self.norm2(h))))     # (N, C_out, H, W)
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with 1x1-conv q, k, v and proj_out.

    The product order is upstream's (bmm(q, k) * C**-0.5, softmax, bmm(v, w^T)) so outputs match it
    bit for bit on CPU; F.scaled_dot_product_attention drifts by ~1e-5 after the decoder. It only
    runs at the lowest level (256 positions for a 256x256 image), where the HW x HW matrix is cheap.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(n, c, height * width).transpose(1, 2)   # (N, HW, C)
        k = self.k(h).reshape(n, c, height * width)                   # (N, C, HW)
        v = self.v(h).reshape(n, c, height * width)                   # (N, C, HW)
        w = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)         # (N, HW query, HW key)
        h = torch.bmm(v, w.transpose(1, 2)).reshape(n, c, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 conv after an asymmetric (0,1,0,1) zero pad, or 2x2 average pooling.

    The pad is upstream's quirk ("no asymmetric padding in torch conv, must do it ourselves"): only
    right and bottom are padded, so the conv taps differ from padding=1 and must be kept for parity.
    """

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then (optionally) a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


def mid_block(channels: int, dropout: float) -> nn.Module:
    """ResnetBlock, AttnBlock, ResnetBlock at the lowest resolution (keys mid.block_1, mid.attn_1, mid.block_2)."""
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


def run_mid(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


#################################################################################
#                               Encoder / Decoder                               #
#################################################################################

class Encoder(nn.Module):
    """Image (N, in_channels, H, W) -> moments (N, 2*z_channels, H/2^(L-1), W/2^(L-1)), L = len(ch_mult).

    Level i works at `resolution // 2**i` and has `num_res_blocks` ResnetBlocks, each followed by an
    AttnBlock when that resolution is in `attn_resolutions`; every level but the last downsamples.
    Attention placement depends on the constructor's `resolution`, not on the input size.
    """

    def __init__(self, *, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, attn_resolutions: tuple[int, ...],
                 dropout: float, resamp_with_conv: bool, in_channels: int, resolution: int, z_channels: int):
        super().__init__()
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for i_level, mult in enumerate(ch_mult):
            block_out = ch * mult
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if resolution // 2 ** i_level in attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i_level != len(ch_mult) - 1:
                level.downsample = Downsample(block_in, resamp_with_conv)
            self.down.append(level)
        self.mid = mid_block(block_in, dropout)
        self.norm_out = group_norm(block_in)
        # double_z: mean and logvar side by side; upstream's variational AutoencoderKL requires it
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                                    # (N, ch, H, W)
        for i_level, level in enumerate(self.down):
            for i_block, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != len(self.down) - 1:
                h = level.downsample(h)                        # (N, C, H/2, W/2)
        h = run_mid(self.mid, h)                               # (N, ch*ch_mult[-1], h, w)
        return self.conv_out(swish(self.norm_out(h)))          # (N, 2*z_channels, h, w)


class Decoder(nn.Module):
    """Latent (N, z_channels, h, w) -> image (N, out_ch, h*2^(L-1), w*2^(L-1)).

    Mirrors the encoder from the lowest level up with `num_res_blocks + 1` ResnetBlocks per level.
    `up[i]` is level i (built lowest-first like upstream's `up.insert(0, ...)`), so keys match.
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                 attn_resolutions: tuple[int, ...], dropout: float, resamp_with_conv: bool, resolution: int,
                 z_channels: int):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = mid_block(block_in, dropout)
        up = []
        for i_level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[i_level]
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if resolution // 2 ** i_level in attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i_level != 0:
                level.upsample = Upsample(block_in, resamp_with_conv)
            up.insert(0, level)
        self.up = nn.ModuleList(up)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)                                    # (N, ch*ch_mult[-1], h, w)
        h = run_mid(self.mid, h)
        for i_level in reversed(range(len(self.up))):
            level = self.up[i_level]
            for i_block, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != 0:
                h = level.upsample(h)                          # (N, C, 2h, 2w)
        return self.conv_out(swish(self.norm_out(h)))          # (N, out_ch, H, W)


#################################################################################
#                                   Posterior                                   #
#################################################################################

class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) from moments (N, 2C, h, w): first C channels mean, last C logvar."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        # upstream clamps before exp so that std can neither overflow nor vanish
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # upstream VA_VAE.encode_images returns a sample, not the mode; the generator makes it reproducible
        # drawn where the generator lives (a CPU generator serves a CUDA model too: same seed, same noise)
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)


#################################################################################
#                                 AutoencoderKL                                 #
#################################################################################

class AutoencoderKL(nn.Module):
    """LDM AutoencoderKL; defaults are the VA-VAE f16d32 (256x256x3 <-> 32x16x16, 69.8 M params).

    `config` holds the constructor arguments (JSON-friendly) so checkpoints can carry them.
    """

    def __init__(self, ch: int = 128, out_ch: int = 3, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, attn_resolutions: tuple[int, ...] = (16,), dropout: float = 0.0,
                 in_channels: int = 3, resolution: int = 256, z_channels: int = 32, embed_dim: int = 32,
                 resamp_with_conv: bool = True):
        super().__init__()
        ch_mult, attn_resolutions = tuple(int(m) for m in ch_mult), tuple(int(r) for r in attn_resolutions)
        bad = [ch * m for m in ch_mult if (ch * m) % 32]
        assert not bad, (f"every level width ch*ch_mult must be a multiple of 32 (GroupNorm(32)), "
                         f"got {bad} from ch={ch}, ch_mult={ch_mult}")
        self.config = dict(ch=ch, out_ch=out_ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                           attn_resolutions=list(attn_resolutions), dropout=dropout, in_channels=in_channels,
                           resolution=resolution, z_channels=z_channels, embed_dim=embed_dim,
                           resamp_with_conv=resamp_with_conv)
        common = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                      dropout=dropout, resamp_with_conv=resamp_with_conv, resolution=resolution, z_channels=z_channels)
        # construction order encoder, decoder, quant_conv, post_quant_conv = upstream's, so a seeded init matches
        self.encoder = Encoder(in_channels=in_channels, **common)
        self.decoder = Decoder(out_ch=out_ch, **common)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, kernel_size=1)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config["ch_mult"]) - 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images (N, 3, H, W) in [-1, 1] -> posterior over latents (N, embed_dim, H/f, W/f)."""
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, embed_dim, h, w) -> images (N, 3, h*f, w*f), roughly in [-1, 1] (not clamped)."""
        return self.decoder(self.post_quant_conv(z))


# Architectures by name, for training from scratch (`tokenizer.fit.model`); resolution is set by the caller.
CONFIGS = {
    "vavae-f16d32": dict(ch=128, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16],
                         z_channels=32, embed_dim=32),            # the released VA-VAE, 69.8 M params
    "small-f16d32": dict(ch=32, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=1, attn_resolutions=[16],
                         z_channels=32, embed_dim=32),            # the shipped default's, 3.4 M params
}


#################################################################################
#                                Checkpoint I/O                                 #
#################################################################################

# Keys of the released VA-VAE .pt that only training used: LPIPS + discriminator (loss.*), the frozen
# DINOv2 of the VF loss (foundation_model.*) and its projection (linear_proj.*). Upstream's filter
# `'foundation_model.model' and 'loss' not in k` only drops 'loss' keys and then loads strict=False;
# here the three prefixes are dropped by name and counted, and everything else must match exactly.
TRAINING_ONLY_PREFIXES = ("loss.", "foundation_model.", "linear_proj.")
TORCH_SUFFIXES = {".pt", ".ckpt", ".pth"}
MAX_REPORTED = 5


def infer_config(state_dict: dict[str, torch.Tensor]) -> dict:
    """AutoencoderKL constructor arguments recovered from tensor names and shapes.

    `resolution` is not stored in a checkpoint; only its ratio to the attention resolutions matters,
    so it is set to 256 and each level that has `attn` keys gets `256 // 2**level` (the f16d32 [16]).
    """
    def shape(key: str) -> torch.Size:
        if key not in state_dict:
            raise KeyError(key)
        return state_dict[key].shape

    ch, in_channels = shape("encoder.conv_in.weight")[:2]
    ch_mult, attn_levels = [], []
    while f"encoder.down.{len(ch_mult)}.block.0.conv1.weight" in state_dict:
        level = len(ch_mult)
        width = shape(f"encoder.down.{level}.block.0.conv1.weight")[0]
        if width % ch:
            raise ValueError(f"encoder.down.{level} width {width} is not a multiple of ch={ch}")
        ch_mult.append(width // ch)
        if f"encoder.down.{level}.attn.0.norm.weight" in state_dict:
            attn_levels.append(level)
    if not ch_mult:
        raise KeyError("encoder.down.0.block.0.conv1.weight")
    num_res_blocks = 0
    while f"encoder.down.0.block.{num_res_blocks}.conv1.weight" in state_dict:
        num_res_blocks += 1
    resolution = 256
    return dict(ch=int(ch), out_ch=int(shape("decoder.conv_out.weight")[0]), ch_mult=ch_mult,
                num_res_blocks=num_res_blocks, attn_resolutions=[resolution // 2 ** lvl for lvl in attn_levels],
                dropout=0.0, in_channels=int(in_channels), resolution=resolution,
                z_channels=int(shape("decoder.conv_in.weight")[1]), embed_dim=int(shape("post_quant_conv.weight")[1]),
                resamp_with_conv=len(ch_mult) == 1 or "encoder.down.0.downsample.conv.weight" in state_dict)


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    obj = load_torch_file(path, "tokenizer checkpoint")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # Lightning-style checkpoint (the released VA-VAE .pt)
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise BadFileError(f"{path}: expected a state dict (str -> tensor) at the top level or under 'state_dict', "
                           f"got {type(obj).__name__}")
    return obj


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict | None, Counter]:
    dropped = Counter()
    state_dict = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                prefix = next((p for p in TRAINING_ONLY_PREFIXES if key.startswith(p)), None)
                if prefix:
                    dropped[prefix] += 1  # counted, never read
                else:
                    state_dict[key] = f.get_tensor(key)
    except (SafetensorError, OSError) as e:
        raise BadFileError(f"cannot read tokenizer checkpoint {path}: truncated or corrupt ({e}); "
                           f"{RESTORE_HINT}") from e
    config = None
    if "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except json.JSONDecodeError as e:
            raise BadFileError(f"{path}: metadata 'config' is not valid JSON ({e}): {metadata['config']!r}") from e
    return state_dict, config, dropped


def _check_keys(expected: dict[str, torch.Size], state_dict: dict[str, torch.Tensor], path: Path,
                config: dict, source: str) -> None:
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k])}"
             for k, v in state_dict.items() if k in expected and v.shape != expected[k]]
    not_float = [f"{k}: {v.dtype}" for k, v in state_dict.items() if k in expected and not v.is_floating_point()]
    problems = [(name, items) for name, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                                    ("shape mismatches", wrong), ("non-float tensors", not_float))
                if items]
    if problems:
        lines = [f"{len(items)} {name}: " + ", ".join(items[:MAX_REPORTED])
                 + (" ..." if len(items) > MAX_REPORTED else "") for name, items in problems]
        raise BadFileError(f"tokenizer checkpoint {path} does not match AutoencoderKL(**{config}) "
                           f"(config {source}): " + "; ".join(lines))


def load_tokenizer(path: str | Path, config: dict | None = None, device: str | torch.device = "cpu") -> AutoencoderKL:
    """Load a frozen, eval-mode, float32 AutoencoderKL from `.pt`/`.ckpt`/`.pth` or `.safetensors`.

    The config comes from `config` if given, else the safetensors metadata `config`, else is
    inferred from the tensor shapes (`infer_config`). Training-only keys are dropped and logged;
    every other key must match the model exactly. Pickled code is refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"tokenizer checkpoint {path} " + ("is a folder, not a checkpoint file" if path.is_dir()
                                                                  else "does not exist"))
    suffix = path.suffix.lower()
    meta_config = None
    if suffix == ".safetensors":
        state_dict, meta_config, dropped = _read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        state_dict = _read_torch(path)
        dropped = Counter(p for k in state_dict for p in TRAINING_ONLY_PREFIXES if k.startswith(p))
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    else:
        raise BadFileError(f"{path}: unknown tokenizer checkpoint type {suffix!r}; expected .safetensors, "
                           + ", ".join(sorted(TORCH_SUFFIXES)))

    if config is not None:
        source = "given"
    elif meta_config is not None:
        config, source = meta_config, "from file metadata"
    else:
        source = "inferred from tensor shapes"
        try:
            config = infer_config(state_dict)
        except (KeyError, ValueError) as e:
            why = f"no tensor {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
            found = sorted({k.split(".")[0] for k in state_dict})
            shown = ", ".join(found[:MAX_REPORTED]) + (", ..." if len(found) > MAX_REPORTED else "")
            raise BadFileError(f"cannot infer the AutoencoderKL config of {path} ({why}): expected an LDM/VA-VAE "
                               f"autoencoder state dict (encoder.*, decoder.*, quant_conv.*, post_quant_conv.*), "
                               f"found {shown or 'no tensors'}") from e

    try:
        with torch.device("meta"):  # no init work: every tensor comes from the file
            model = AutoencoderKL(**config)
    except (TypeError, AssertionError) as e:
        raise BadFileError(f"{path}: bad tokenizer config ({source}) {config}: {e}") from e
    expected = {k: v.shape for k, v in model.state_dict().items()}
    _check_keys(expected, state_dict, path, config, source)

    # fp16/bf16 on disk is upcast here; float32 tensors are used as they are (no copy)
    state_dict = {k: v.float() for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    del state_dict
    model = model.to(device).eval().requires_grad_(False)
    log.info("tokenizer %s: %d tensors loaded, config %s %s; ignored %d training-only keys%s",
             path, len(expected), source, config, sum(dropped.values()),
             " (" + ", ".join(f"{p}*: {n}" for p, n in sorted(dropped.items())) + ")" if dropped else "")
    return model


# on-disk dtypes of `save_tokenizer`, by the names the yaml files use (`save.dtype`, `tokenizer.fit.save_dtype`)
SAVE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def save_tokenizer(model: AutoencoderKL, path: str | Path, metadata: dict | None = None,
                   dtype: torch.dtype | None = None) -> None:
    """Write `model` as .safetensors (atomically) with its config in the metadata.

    `dtype` (e.g. torch.float16) casts the floating tensors on disk; `load_tokenizer` upcasts again.
    Extra `metadata` values that are not strings are stored as JSON.
    """
    path = Path(path)
    assert path.suffix == ".safetensors", f"save_tokenizer writes .safetensors, got {path}"

    metadata = dict(metadata or {})
    assert "config" not in metadata, "metadata['config'] is reserved for the model's own config"
    metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    metadata["config"] = json.dumps(model.config)
    tensors = {k: v.detach().to("cpu", dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
               .contiguous() for k, v in model.state_dict().items()}
    save_safetensors(tensors, path, metadata)


# what the `tokenizer` stage writes into its folder: which checkpoint `extract` and `sample` use
PREPARED = "tokenizer.json"


def tokenizer_file(path: str | Path) -> Path:
    """The checkpoint a tokenizer argument stands for: the one a `tokenizer` stage folder names
    (`prepared_tokenizer`), or the checkpoint file itself."""
    return prepared_tokenizer(path) if Path(path).is_dir() else Path(path)


def prepared_tokenizer(folder: str | Path) -> Path:
    """The checkpoint the `tokenizer` stage chose (`folder`/tokenizer.json): its fitted tokenizer.safetensors, or,
    unfitted, tokenizer.checkpoint itself, by path, its sha256 checked against the one recorded then (an edit
    since the stage ran is an error: `dvc repro` runs the stage again)."""
    from mdgen.io import file_sha256, read_json

    folder = Path(folder)
    record = read_json(folder / PREPARED)
    path = folder / "tokenizer.safetensors" if record.get("fitted") else Path(record.get("checkpoint", ""))
    if not path.is_file():
        raise MissingFileError(f"tokenizer checkpoint {path} (named by {folder / PREPARED}) does not exist: "
                               f"{RESTORE_HINT}")
    if file_sha256(path) != record.get("sha256"):
        raise BadFileError(f"{path} changed since the `tokenizer` stage recorded it in {folder / PREPARED} "
                           "(sha256 differs): run `dvc repro`")
    return path
