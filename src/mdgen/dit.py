"""LightningDiT: a DiT with RoPE, SwiGLU, RMSNorm and adaLN-Zero, conditioned on a class (user) label.

Architecture, parameter names and init follow hustvl/LightningDiT `models/lightningdit.py`
(commit 2725fed42a14898744433809949834e26957bcdd) with its helpers `models/swiglu_ffn.py`,
`models/rmsnorm.py`, `models/pos_embed.py` and timm 1.0.12 `PatchEmbed` / `Mlp`, so an upstream
checkpoint loads strictly and ours loads back into upstream code. Numerics are checked against
reference tensors from the upstream code in `tests/fixtures/lightningdit_tiny*_parity.*`.

The flow time t in [0, 1] (0 = noise, 1 = data) goes straight into the sinusoidal embedder,
as upstream does: no x1000 scaling.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mdgen.errors import ParamsError


#################################################################################
#                                    Helpers                                    #
#################################################################################

def modulate(x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of tokens x [B, N, D] by per-sample shift/scale [B, D]; shift None = scale only (wo_shift)."""
    if shift is None:
        return x * (1 + scale.unsqueeze(1))
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _sincos_1d(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """[len(pos), embed_dim] = [sin(pos*omega), cos(pos*omega)], omega = 10000^(-k/(D/2)), in float64 (MAE)."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = pos.reshape(-1).double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding [grid_size**2, embed_dim] (float32), tokens in row-major order.

    Port of MAE `get_2d_sincos_pos_embed` as used by upstream `models/pos_embed.py`. Upstream builds
    the grid with `np.meshgrid(grid_w, grid_h)` (w first), so the *first* half of the channels encodes
    the column index and the second half the row index; kept for parity.
    """
    assert embed_dim % 4 == 0, f"sin-cos pos-embed needs hidden_size divisible by 4, got {embed_dim}"
    coords = torch.arange(grid_size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat([_sincos_1d(embed_dim // 2, cols), _sincos_1d(embed_dim // 2, rows)], dim=1)
    return emb.float()


class VisionRotaryEmbedding(nn.Module):
    """2D RoPE over the token grid: first half of head_dim rotates with the row, second half with the column.

    Port of EVA-02's `VisionRotaryEmbeddingFast` (freqs_for='lang', theta 10000) as used by upstream with
    dim = head_dim // 2 and pt_seq_len = grid size. Channel pairs are interleaved ((x0, x1) rotate
    together), not split in halves as in LLaMA. The tables are persistent buffers
    (`feat_rope.freqs_cos` / `freqs_sin` [N, head_dim]) because upstream checkpoints contain them.
    """

    def __init__(self, dim: int, grid_size: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        # upstream: arange(ft_seq_len) / ft_seq_len * pt_seq_len with ft == pt, i.e. positions 0..grid-1
        pos = torch.arange(grid_size) / grid_size * grid_size
        freqs = torch.einsum("n,f->nf", pos, freqs).repeat_interleave(2, dim=-1)  # [grid, dim]
        freqs = torch.cat(
            [freqs[:, None, :].expand(grid_size, grid_size, dim), freqs[None, :, :].expand(grid_size, grid_size, dim)],
            dim=-1,
        ).reshape(grid_size * grid_size, 2 * dim)  # [N, head_dim]: rows then columns
        self.register_buffer("freqs_cos", freqs.cos())
        self.register_buffer("freqs_sin", freqs.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x [B, heads, N, head_dim]."""
        x_pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack((-x_pairs[..., 1], x_pairs[..., 0]), dim=-1).flatten(-2)
        return x * self.freqs_cos.to(x.dtype) + rotated * self.freqs_sin.to(x.dtype)


#################################################################################
#               Embedding Layers for Patches, Timesteps and Labels              #
#################################################################################

class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens, a strided conv (timm `PatchEmbed`, key `proj`)."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        assert input_size % patch_size == 0, f"input_size {input_size} not divisible by patch_size {patch_size}"
        self.input_size = input_size
        self.patch_size = patch_size
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size ** 2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (self.input_size, self.input_size), (
            f"input spatial size {tuple(x.shape[-2:])} != model input_size {self.input_size}")
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class TimestepEmbedder(nn.Module):
    """Scalar time -> vector: sinusoidal features (cos first, then sin, as DiT) then a 2-layer SiLU MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Label -> vector, with one extra row (index num_classes) as the null label for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        # the null row exists only when labels can be dropped (upstream): a model trained without
        # label dropout cannot be guided
        use_cfg_embedding = int(dropout_prob > 0)
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


#################################################################################
#                          Norm, FFN, Attention, Block                          #
#################################################################################

class RMSNorm(nn.Module):
    """RMSNorm with a learned gain, eps 1e-6, computed in float32 and cast back (upstream LLaMA-style `models/rmsnorm.py`)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight


class SwiGLUFFN(nn.Module):
    """w3(silu(a) * b) with [a, b] = w12(x): one fused input projection, key names as DINOv2's `SwiGLUFFN`."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=True)
        self.w3 = nn.Linear(hidden_features, in_features, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2, the upstream fallback when use_swiglu is False (timm `Mlp` key names)."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=True)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


ATTENTION = ("auto", "fused", "plain")


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v written out, as timm's non-fused path, with the softmax in fp32 (what
    CUDA autocast does, and CPU autocast does not)."""
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return logits.float().softmax(-1).to(v.dtype) @ v


class Attention(nn.Module):
    """Multi-head self-attention (timm layout: fused qkv with bias, optional per-head q/k norm, RoPE after the norm).

    `attention`: "fused" is F.scaled_dot_product_attention (flash kernels on GPUs; upstream's path), "plain" the
    product written out (`plain_attention`), "auto" plain on a CPU and fused elsewhere: torch's CPU flash-attention
    backward is slow at DiT token counts, and the written-out product lets inductor fuse it (benchmarks/README.md).
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, use_rmsnorm: bool = False,
                 attention: str = "auto"):
        super().__init__()
        assert dim % num_heads == 0, f"hidden_size {dim} not divisible by num_heads {num_heads}"
        if attention not in ATTENTION:
            raise ValueError(f"attention {attention!r}: expected one of {', '.join(ATTENTION)}")
        self.attention = attention
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        # upstream picks RMSNorm for q/k when use_rmsnorm, else timm's default affine LayerNorm (eps 1e-5)
        norm_layer = RMSNorm if use_rmsnorm else nn.LayerNorm
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: VisionRotaryEmbedding | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                  # [B, heads, N, head_dim] each
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        if self.attention == "fused" or (self.attention == "auto" and q.device.type != "cpu"):
            x = F.scaled_dot_product_attention(q, k, v)          # [B, heads, N, head_dim]
        else:
            x = plain_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))     # [B, N, D]


class LightningDiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero: per-sample shift/scale/gate for attention and FFN from c."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, use_qknorm: bool = False,
                 use_swiglu: bool = True, use_rmsnorm: bool = True, wo_shift: bool = False, attention: str = "auto"):
        super().__init__()
        if use_rmsnorm:
            self.norm1 = RMSNorm(hidden_size)
            self.norm2 = RMSNorm(hidden_size)
        else:
            self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qk_norm=use_qknorm, use_rmsnorm=use_rmsnorm, attention=attention)
        mlp_hidden_dim = int(hidden_size * mlp_ratio)
        if use_swiglu:
            # upstream shrinks the hidden width by 2/3 so SwiGLU's three matrices cost what GELU's two do
            self.mlp = SwiGLUFFN(hidden_size, int(2 / 3 * mlp_hidden_dim))
        else:
            self.mlp = Mlp(hidden_size, mlp_hidden_dim)
        self.wo_shift = wo_shift
        n_mod = 4 if wo_shift else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mod * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor, feat_rope: VisionRotaryEmbedding | None = None) -> torch.Tensor:
        if self.wo_shift:
            scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(4, dim=1)
            shift_msa = shift_mlp = None
        else:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope=feat_rope)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x                                                  # [B, N, D]


class FinalLayer(nn.Module):
    """Norm, adaLN shift/scale (always with shift, also when wo_shift: upstream), linear to p*p*C per token."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, use_rmsnorm: bool = True):
        super().__init__()
        if use_rmsnorm:
            self.norm_final = RMSNorm(hidden_size)
        else:
            self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # [B, N, p*p*C]


#################################################################################
#                                 Core Model                                    #
#################################################################################

GUIDANCE_CHANNELS = ("all", "first3")


class LightningDiT(nn.Module):
    """Class-conditional LightningDiT predicting the flow velocity of latents [B, C, H, W].

    Defaults are upstream's VA-VAE f16d32 config (`configs/lightningdit_xl_vavae_f16d32.yaml`): 16x16x32
    latents, SwiGLU + RoPE + RMSNorm, no qk-norm, 1000 classes (ImageNet). mdgen passes num_classes =
    number of users. Upstream's `learn_sigma` (always False for flow matching) is not offered:
    out_channels = in_channels. `attention`: the kernel (`Attention`); it changes rounding, not the weights.
    """

    def __init__(
        self,
        input_size: int = 16,
        patch_size: int = 1,
        in_channels: int = 32,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        use_qknorm: bool = False,
        use_swiglu: bool = True,
        use_rope: bool = True,
        use_rmsnorm: bool = True,
        wo_shift: bool = False,
        attention: str = "auto",
    ):
        super().__init__()
        # resolved constructor kwargs: stored in checkpoints so a model can be rebuilt from them
        self.config = dict(
            input_size=input_size, patch_size=patch_size, in_channels=in_channels, hidden_size=hidden_size,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, class_dropout_prob=class_dropout_prob,
            num_classes=num_classes, use_qknorm=use_qknorm, use_swiglu=use_swiglu, use_rope=use_rope,
            use_rmsnorm=use_rmsnorm, wo_shift=wo_shift, attention=attention,
        )
        assert hidden_size % num_heads == 0, f"hidden_size {hidden_size} not divisible by num_heads {num_heads}"
        head_dim = hidden_size // num_heads
        if use_rope:
            assert head_dim % 4 == 0, f"RoPE needs head_dim divisible by 4, got {hidden_size}/{num_heads}={head_dim}"
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.num_classes = num_classes

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # fixed sin-cos table, added even with RoPE; a frozen Parameter (not a buffer) because upstream
        # declares it so: it is counted in parameters() and saved in the state_dict
        self.pos_embed = nn.Parameter(
            get_2d_sincos_pos_embed(hidden_size, self.x_embedder.grid_size).unsqueeze(0), requires_grad=False)
        self.feat_rope = VisionRotaryEmbedding(head_dim // 2, self.x_embedder.grid_size) if use_rope else None
        self.blocks = nn.ModuleList([
            LightningDiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, use_qknorm=use_qknorm,
                              use_swiglu=use_swiglu, use_rmsnorm=use_rmsnorm, wo_shift=wo_shift, attention=attention)
            for _ in range(depth)
        ])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, use_rmsnorm=use_rmsnorm)
        initialize_weights(self)

    @property
    def null_class(self) -> int | None:
        """Label index of the CFG null embedding, None when the model has none (class_dropout_prob == 0)."""
        return self.num_classes if self.y_embedder.dropout_prob > 0 else None

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, p*p*C] -> [B, C, H, W]; per-token channel order is (p, q, c) as upstream."""
        c, p, h = self.out_channels, self.patch_size, self.x_embedder.grid_size
        x = x.reshape(x.shape[0], h, h, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, h * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity for latents x [B, C, H, W] at flow times t [B] in [0, 1] with labels y [B].

        In training mode labels are replaced by the null class with probability class_dropout_prob;
        force_drop_ids [B] (1 = drop) overrides that in any mode.
        """
        x = self.x_embedder(x) + self.pos_embed                   # [B, N, D]
        t = self.t_embedder(t)                                    # [B, D]
        y = self.y_embedder(y, self.training, force_drop_ids)     # [B, D]
        c = t + y                                                 # [B, D]
        for block in self.blocks:
            x = block(x, c, feat_rope=self.feat_rope)             # [B, N, D]
        x = self.final_layer(x, c)                                # [B, N, p*p*C]
        return self.unpatchify(x)                                 # [B, C, H, W]

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                         cfg_interval_start: float, guidance_channels: str) -> torch.Tensor:
        """Classifier-free guided velocity, upstream's batch layout: x, t, y [2B] = [cond half, uncond half].

        Only x[:B] is used (both halves run on it), y[B:] should be the null class. No guidance while
        t[0] < cfg_interval_start (the conditional prediction is returned; upstream's cfg_interval=False
        is cfg_interval_start=0). The result [2B] repeats the guided velocity in both halves.

        guidance_channels='first3' reproduces upstream: DiT guided only 3 of its 4 SD-VAE channels "for
        exact reproducibility" and LightningDiT kept that line for 32-channel latents, so channels 3..
        carry the conditional (first half) / unconditional (second half) prediction unguided.
        'all' is standard CFG on every channel; with 32 channels, guiding 3 barely conditions.
        """
        assert guidance_channels in GUIDANCE_CHANNELS, f"guidance_channels {guidance_channels!r} not in {GUIDANCE_CHANNELS}"
        half = x[: len(x) // 2]
        # self(...), not self.forward(...): an in-place `Module.compile()` (mdgen bench) replaces __call__
        model_out = self(torch.cat([half, half], dim=0), t, y)   # [2B, C, H, W]
        n_guided = 3 if guidance_channels == "first3" else model_out.shape[1]
        eps, rest = model_out[:, :n_guided], model_out[:, n_guided:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        # t >= 0, so with no interval (start <= 0) the test is skipped: reading t[0] on the host would
        # wait for the GPU at every sampling step
        if cfg_interval_start > 0 and t[0] < cfg_interval_start:
            half_eps = cond_eps
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)                      # [2B, C, H, W]


def initialize_weights(model: LightningDiT) -> None:
    """Upstream init (from DiT): xavier linears, zeroed adaLN and output so every block starts as identity."""
    # transformer linears: xavier-uniform weights, zero biases
    def _basic_init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
    model.apply(_basic_init)

    # patch embedding like a linear layer (xavier on the flattened conv kernel)
    w = model.x_embedder.proj.weight.data
    nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
    nn.init.constant_(model.x_embedder.proj.bias, 0)

    # label table and timestep MLP: N(0, 0.02)
    nn.init.normal_(model.y_embedder.embedding_table.weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)

    # zero-out adaLN modulation (adaLN-Zero) and the output layer
    for block in model.blocks:
        nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
    nn.init.constant_(model.final_layer.adaLN_modulation[-1].weight, 0)
    nn.init.constant_(model.final_layer.adaLN_modulation[-1].bias, 0)
    nn.init.constant_(model.final_layer.linear.weight, 0)
    nn.init.constant_(model.final_layer.linear.bias, 0)


#################################################################################
#                              LightningDiT Configs                             #
#################################################################################

# Upstream sizes (DiT's B/L/XL); "/p" is the patch size. mdgen's latents are 16x16, so /1 = 256 tokens
# (upstream's choice for VA-VAE f16d32) and /2 = 64 tokens, about 4x less compute.

LightningDiT_configs = {
    "LightningDiT-XL/1": dict(depth=28, hidden_size=1152, patch_size=1, num_heads=16),
    "LightningDiT-XL/2": dict(depth=28, hidden_size=1152, patch_size=2, num_heads=16),
    "LightningDiT-L/2": dict(depth=24, hidden_size=1024, patch_size=2, num_heads=16),
    "LightningDiT-B/1": dict(depth=12, hidden_size=768, patch_size=1, num_heads=12),
    "LightningDiT-B/2": dict(depth=12, hidden_size=768, patch_size=2, num_heads=12),
    # Small sizes for CPU runs and a few dozen users (not upstream). S is DiT-S (384 wide, 12 deep, 6 heads).
    # Tiny is DeiT-Ti's width and heads (192, 3 heads, head_dim 64 like every upstream size, so RoPE gets
    # the same 16 frequencies per axis) at half its depth: 4.2 M parameters, 1.7 GFLOPs per /1 sample,
    # enough to fit 8-31 users' 16x16x32 latents in a CPU pipeline budget of minutes.
    "LightningDiT-S/1": dict(depth=12, hidden_size=384, patch_size=1, num_heads=6),
    "LightningDiT-S/2": dict(depth=12, hidden_size=384, patch_size=2, num_heads=6),
    "LightningDiT-Tiny/1": dict(depth=6, hidden_size=192, patch_size=1, num_heads=3),
    "LightningDiT-Tiny/2": dict(depth=6, hidden_size=192, patch_size=2, num_heads=3),
}


def build_dit(name: str, **overrides) -> LightningDiT:
    """Build a registered size, e.g. build_dit("LightningDiT-B/1", num_classes=31); overrides are constructor kwargs."""
    if name not in LightningDiT_configs:
        raise ParamsError(f"unknown model {name!r}; valid names: {', '.join(LightningDiT_configs)}")
    # overrides win over the preset, so a test or notebook can shrink a registered size
    return LightningDiT(**{**LightningDiT_configs[name], **overrides})
