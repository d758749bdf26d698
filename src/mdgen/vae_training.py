"""Train and measure a small AutoencoderKL tokenizer: the default that ships in `data/pretrained/`.

The real VA-VAE is trained with L1 + LPIPS + GAN + a DINOv2 alignment loss on ImageNet. The
shipped default only has to be a faithful, smooth-latent codec of spectrograms, so it is trained
like the LDM first stage without its perceptual/adversarial terms: L1 (+ L2) reconstruction of
posterior *samples* plus a small KL, on random crops (the network is fully convolutional), with AdamW
and a warmup + cosine learning rate. Two init choices make a CPU-sized budget go further: a narrow
starting posterior and zero-initialised residual branches.

    model, history = train_tokenizer("data/simulated", recipe, seed=0, model_config={...})  # recipe: params.TokenizerRecipe
    metrics = evaluate_tokenizer(model, heldout_files)   # psnr, ssim, channel stds, dead channels
    linear_codec_psnr(train_files, heldout_files)         # what a linear codec of the same budget gets
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mdgen.errors import DataError, DivergedError, MissingFileError, ParamsError
from mdgen import resume
from mdgen.images import load_images, to_tensor, to_uint8, uint8_to_float
from mdgen.io import atomic_path, list_dataset_images, list_images
from mdgen.latents import image_batches
from mdgen.params import TokenizerRecipe
from mdgen.quality import psnr, ssim
from mdgen.schedules import lr_factor
from mdgen.tokenizer import AttnBlock, AutoencoderKL, ResnetBlock

log = logging.getLogger(__name__)

# a latent channel whose std over the data is at most this fraction of the mean channel std carries
# (almost) nothing: the DiT would be asked to model a constant, and stats normalisation would blow it up
DEAD_FRACTION = 0.01


def collect_files(source: str | Path | list) -> list[Path]:
    """Image files from a list, a folder of images, or a folder of user sub-folders (the data layout)."""
    if isinstance(source, (list, tuple)):
        files = [Path(f) for f in source]
    else:
        source = Path(source)
        if not source.is_dir():
            raise MissingFileError(f"training images: {source} is not a folder")
        files = list_images(source)
        if not files:
            files = list_dataset_images(source)
    if not files:
        raise DataError(f"no training images in {source}")
    return files


def _load_nchw(files: list[Path], image_size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) of image files (`mdgen.images.load_images`, channels first)."""
    return torch.from_numpy(load_images(files, image_size)).permute(0, 3, 1, 2).contiguous()


def reconstruction_loss(model: AutoencoderKL, x: torch.Tensor, gen: torch.Generator, *, l1_weight: float,
                        l2_weight: float, kl_weight: float) -> tuple[torch.Tensor, ...]:
    """(loss, rec, kl, mse) of one batch of crops in [-1, 1]; kl per image, divided by the pixels as `rec` is."""
    post = model.encode(x)
    # decode a posterior sample, as LDM does: the decoder learns to tolerate the latent noise that
    # sampled extraction (extract.sample_posterior) and DiT samples put in front of it
    x_hat = model.decode(post.sample(generator=gen))
    err = x_hat - x
    mse = err.pow(2).mean()
    rec = l1_weight * err.abs().mean() + l2_weight * mse
    kl = kl_per_image(post.mean, post.logvar).mean() / x[0].numel()
    return rec + kl_weight * kl, rec, kl, mse


def kl_per_image(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over each latent, as LDM's DiagonalGaussian.kl()."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def random_crops(images: torch.Tensor, n: int, crop: int, grid: int, gen: torch.Generator) -> torch.Tensor:
    """`n` random (crop x crop) windows as float [-1, 1] (n, 3, crop, crop).

    Offsets are multiples of `grid` (the downsampling factor): the stride-2 convs are not shift-
    equivariant, so a window that starts on the latent grid has the pixel-to-latent phase that full
    images have at inference, and no capacity is spent on the 15 other phases.
    """
    num, _, height, width = images.shape
    assert crop <= height and crop <= width, f"crop {crop} is larger than the images ({height}x{width})"
    idx = torch.randint(num, (n,), generator=gen)
    top = torch.randint((height - crop) // grid + 1, (n,), generator=gen) * grid
    left = torch.randint((width - crop) // grid + 1, (n,), generator=gen) * grid
    batch = torch.stack([images[i, :, t:t + crop, s:s + crop] for i, t, s in zip(idx.tolist(), top.tolist(),
                                                                                  left.tolist())])
    return uint8_to_float(batch)


def init_tokenizer(model_config: dict, seed: int, *, init_logvar: float | None = None,
                   zero_init_residual: bool = False) -> AutoencoderKL:
    """`AutoencoderKL(**model_config)` initialised from `seed` (without touching the global RNG), with the two
    init choices of `train_tokenizer` (see its parameters)."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = AutoencoderKL(**model_config)
    if init_logvar is not None:
        # with a small kl_weight the posterior ends narrow anyway (narrowing costs ~1e-6 per nat), while from
        # the default init (std ~1 against means of ~0.3) the decoder first sees mostly noise
        with torch.no_grad():
            model.quant_conv.bias[model.config["embed_dim"]:].fill_(init_logvar)
    if zero_init_residual:
        # every block starts as the identity, so the signal first takes the short path through the resampling
        # convs and depth grows in (the zero-gamma trick of Goyal et al. 2017): a faster start
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, ResnetBlock):
                    module.conv2.weight.zero_()
                    module.conv2.bias.zero_()
                elif isinstance(module, AttnBlock):
                    module.proj_out.weight.zero_()
                    module.proj_out.bias.zero_()
    return model


def train_tokenizer(images: str | Path | list, recipe: TokenizerRecipe, seed: int, *,
                    model_config: dict | None = None, model: AutoencoderKL | None = None, image_size: int = 256,
                    log_every: int = 50, device: str | torch.device = "cpu", state_path: str | Path | None = None,
                    checkpoint_every: int = 0, resume: bool = True,
                    progress: bool = True) -> tuple[AutoencoderKL, list[dict]]:
    """Train `AutoencoderKL(**model_config)` from scratch, or fine-tune `model`, on images as `recipe` says
    (params.yaml's `tokenizer.fit`, or `mdgen tokenizer-train`'s `train` section); returns
    (eval-mode float32 model on `device`, history).

    :param images: a folder (user sub-folders or images) or a list of image files
    :param recipe: the optimisation (see `mdgen.params.TokenizerRecipe` for every field): the KL weight is LDM's
        convention, the latent KL *summed* per image against the reconstruction loss *summed* per image (both
        divided by 3*H*W here, which keeps the ratio); `final_crop` is used for the last `final_steps` steps
        (whole images show the borders and GroupNorm statistics of inference), with the batch scaled so a step
        sees about the same number of pixels (same cost, same gradient noise), at least one image;
        `init_logvar` and `zero_init_residual` shape a fresh network and are not used when fine-tuning
    :param model: weights to fine-tune (trained in place, put in train mode); exactly one of it and `model_config`
    :param seed: initialisation, crop positions and posterior noise all follow it; the same seed, data
        and thread count give bit-identical weights, also across a resume
    :param state_path: resume file (model, optimiser, noise generator, step), written atomically every
        `checkpoint_every` steps and at the end; with `resume`, a file whose fingerprint (recipe, seed, image
        list, starting weights: `mdgen.resume`) matches this call's is continued from its step, any other is
        ignored, the reason logged, and overwritten
    history: one dict per `log_every` steps (and the last): step, lr, crop, loss, rec, kl, psnr (dB, of
    the training crops through posterior samples), images_per_s, seconds.
    """
    r = recipe
    _check_schedule(r.steps, r.batch_size, r.final_crop, r.final_steps)
    if (model is None) == (model_config is None):
        raise ValueError("train_tokenizer needs exactly one of model_config (train from scratch) and model (fine-tune)")
    files = collect_files(images)
    data = _load_nchw(files, image_size)
    device = torch.device(device)
    if model is None:
        model = init_tokenizer(model_config, seed, init_logvar=r.init_logvar, zero_init_residual=r.zero_init_residual)
    model = model.float().to(device).requires_grad_(True)
    grid = model.downsample_factor
    for size in (r.crop, r.final_crop or r.crop):
        if size % grid or size > image_size:
            raise ParamsError(f"crop {size} must be a multiple of the downsampling factor {grid} and at most "
                              f"the image size {image_size}")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, betas=(r.beta1, r.beta2), weight_decay=r.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    fingerprint = _fingerprint(recipe, seed, image_size, files, model) if state_path is not None else None
    history: list[dict] = []
    sums = {"loss": 0.0, "rec": 0.0, "kl": 0.0, "mse": 0.0}
    seen, n_acc, start = 0, 0, 0
    if state_path is not None and resume:
        state = _read_state(Path(state_path), fingerprint, device)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"])
            start, history, sums, n_acc, seen = state["step"], state["history"], state["sums"], state["n_acc"], state["seen"]
            log.info("tokenizer training: resuming %s at step %d of %d", state_path, start, r.steps)
    steps, batch_size, crop, final_crop, final_steps = r.steps, r.batch_size, r.crop, r.final_crop, r.final_steps
    log.info("tokenizer training: %d images, %.2f M params on %s, %d steps x %d crops of %d px%s", len(files),
             sum(p.numel() for p in model.parameters()) / 1e6, device.type, steps, batch_size, crop,
             f", last {final_steps} at {final_crop} px" if final_steps else "")

    t_start = t_log = time.perf_counter()
    elapsed = history[-1]["seconds"] if history else 0.0
    bar = tqdm(range(start, steps), desc="tokenizer", unit="step", disable=not progress, initial=start, total=steps)
    for step in bar:
        size, n = crop, batch_size
        if step >= steps - final_steps:
            size = final_crop
            n = max(1, round(batch_size * crop ** 2 / final_crop ** 2))
        # crops and posterior noise come from the CPU generator whatever the device: same seed, same draws
        x = random_crops(data, n, size, grid, gen).to(device)
        # cosine from lr to min_lr_ratio * lr at the last step
        current_lr = r.lr * lr_factor(step, warmup_steps=r.warmup_steps, max_steps=steps - 1, schedule="cosine",
                                      floor=r.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = current_lr

        loss, rec, kl, mse = reconstruction_loss(model, x, gen, l1_weight=r.l1_weight, l2_weight=r.l2_weight,
                                                 kl_weight=r.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if r.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()

        for k, v in (("loss", loss), ("rec", rec), ("kl", kl), ("mse", mse)):
            sums[k] += v.item()
        n_acc += 1
        seen += n
        if (step + 1) % log_every == 0 or step == steps - 1:
            now = time.perf_counter()
            entry = {"step": step + 1, "lr": current_lr, "crop": size, **_averages(sums, n_acc),
                     "images_per_s": seen / (now - t_log), "seconds": elapsed + now - t_start}
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}", psnr=f"{entry['psnr']:.2f}")
            log.info("step %d/%d lr %.2e crop %d: loss %.5f rec %.5f kl %.2f psnr %.2f dB, %.1f img/s", step + 1,
                     steps, current_lr, size, entry["loss"], entry["rec"], entry["kl"], entry["psnr"],
                     entry["images_per_s"])
            if not math.isfinite(entry["loss"]):
                raise DivergedError(f"tokenizer training diverged at step {step + 1} (loss {entry['loss']}); "
                                    f"lower lr={r.lr} or keep grad_clip")
            sums = dict.fromkeys(sums, 0.0)
            n_acc, seen, t_log = 0, 0, now
        if state_path is not None and ((checkpoint_every and (step + 1) % checkpoint_every == 0) or step == steps - 1):
            _write_state(Path(state_path), {
                "fingerprint": fingerprint, "step": step + 1, "model": model.state_dict(), "opt": opt.state_dict(),
                "gen": gen.get_state(), "history": history, "sums": sums, "n_acc": n_acc, "seen": seen})
    bar.close()
    return model.eval().requires_grad_(False), history


def _fingerprint(recipe: TokenizerRecipe, seed: int, image_size: int, files: list[Path],
                 model: AutoencoderKL) -> dict:
    """What decides the weights a run ends with (`mdgen.resume`): the recipe and seed, the image list, and the
    architecture and starting weights (as sha256: a new init never resumes an old run)."""
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    # the recipe's own fields only: a TokenizerFitConfig also says where the run goes and how often it saves
    return {"recipe": {f.name: getattr(recipe, f.name) for f in dataclasses.fields(TokenizerRecipe)}, "seed": seed, "image_size": image_size,
            "files": hashlib.sha256("\n".join(str(f) for f in files).encode()).hexdigest(), "n_files": len(files),
            "config": model.config, "weights": weights.hexdigest()}


def _read_state(path: Path, fingerprint: dict, device: torch.device) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a torn or foreign file is not resumed, training starts over
        log.warning("tokenizer training: %s is not a readable resume file (%s); starting over", path, e)
        return None
    ok, why = resume.decide(state.get("fingerprint") if isinstance(state, dict) else None, fingerprint, str(path))
    if not ok:
        log.info("tokenizer training: starting over: %s", why)
        return None
    state["gen"] = state["gen"].cpu()
    return state


def _write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _check_schedule(steps: int, batch_size: int, final_crop: int | None, final_steps: int) -> None:
    if steps < 1 or batch_size < 1:
        raise ParamsError(f"need steps >= 1 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    if not 0 <= final_steps <= steps or (final_crop is None) != (final_steps == 0):
        raise ParamsError(f"final_crop={final_crop}, final_steps={final_steps}: give both (0 < final_steps <= "
                         f"steps={steps}) or neither (final_crop null, final_steps 0)")


def _averages(sums: dict[str, float], n: int) -> dict[str, float]:
    """Mean loss, rec and kl over the last `n` steps, and the PSNR of their mean squared error."""
    avg = {k: v / n for k, v in sums.items()}
    # crops are in [-1, 1]: peak-to-peak 2, so PSNR = 10 log10(4 / mse)
    return {"loss": avg["loss"], "rec": avg["rec"], "kl": avg["kl"],
            "psnr": 10 * math.log10(4.0 / max(avg["mse"], 1e-12))}


def _patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float64 (N * H/p * W/p, 3 * p * p) non-overlapping patches."""
    n, c, h, w = images.shape
    x = images.double().reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(-1, c * patch * patch)


def _unpatch(patches: torch.Tensor, n: int, c: int, h: int, w: int, patch: int) -> torch.Tensor:
    x = patches.reshape(n, h // patch, w // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, h, w)


@torch.no_grad()
def linear_codec_psnr(train_files: list, eval_files: list, *, patch: int = 16, components=(16, 32, 64, 128, 256),
                      image_size: int = 256, max_train_patches: int = 32768) -> dict[int, float]:
    """Held-out PSNR of the best *linear* codec that keeps k numbers per (patch x patch) RGB patch.

    PCA of the training patches is the MSE-optimal linear encoder/decoder pair, so this is the yardstick
    for a tokenizer with the same budget (f16 with 32 channels = 32 numbers per 16x16 patch): it shows how
    many numbers per patch the data needs for a given PSNR, i.e. how much a nonlinear codec has to win.
    """
    train = _load_nchw([Path(f) for f in train_files], image_size)
    per_image = (image_size // patch) ** 2
    step = max(1, math.ceil(len(train) * per_image / max_train_patches))
    x = _patches(train[::step], patch)                                     # (P, 3*p*p)
    mean = x.mean(0)
    _, _, vt = torch.linalg.svd(x - mean, full_matrices=False)             # rows: principal directions
    held = _load_nchw([Path(f) for f in eval_files], image_size)
    y = _patches(held, patch) - mean
    out = {}
    for k in components:
        basis = vt[:k]                                                     # (k, 3*p*p)
        rec = _unpatch(y @ basis.T @ basis + mean, *held.shape, patch)
        rec = rec.round().clamp(0, 255).to(torch.uint8)
        out[int(k)] = float(np.mean(psnr(held.permute(0, 2, 3, 1), rec.permute(0, 2, 3, 1))))
    return out


@torch.no_grad()
def evaluate_tokenizer(model: AutoencoderKL, files: list, *, image_size: int = 256, batch_size: int = 8,
                       seed: int = 0) -> dict:
    """Reconstruction quality and latent health of `model` on full-size images.

    psnr/ssim: through the posterior mean (what `extract` reports); psnr_sample/ssim_sample: through a
    posterior sample (what `extract.sample_posterior: true` feeds the DiT), noise seeded by `seed`.
    channel_std: per-channel std of the posterior means over images and positions; a channel is dead
    when its std is <= 1 % of the mean channel std.
    """
    model.eval()
    files = [Path(f) for f in files]
    assert files, "evaluate_tokenizer needs at least one image"
    gen = torch.Generator().manual_seed(seed)
    originals, rec_mean, rec_sample, means, post_std = [], [], [], [], []
    for batch in image_batches(files, image_size, batch_size):
        post = model.encode(to_tensor(batch))
        originals.append(batch)
        rec_mean.append(to_uint8(model.decode(post.mode())))
        rec_sample.append(to_uint8(model.decode(post.sample(generator=gen))))
        means.append(post.mean)
        post_std.append(post.std.flatten(2).mean(2))
    originals, rec_mean, rec_sample = (np.concatenate(a) for a in (originals, rec_mean, rec_sample))
    z = torch.cat(means).double()                               # (N, C, h, w)
    std = z.std(dim=(0, 2, 3))                                  # (C,)
    dead = (std <= DEAD_FRACTION * std.mean()).nonzero().flatten().tolist()
    q_mean, q_sample = psnr(originals, rec_mean), psnr(originals, rec_sample)
    s_mean, s_sample = ssim(originals, rec_mean), ssim(originals, rec_sample)
    return {
        "images": len(files),
        "psnr": float(np.mean(q_mean)),
        "psnr_min": float(np.min(q_mean)),
        "ssim": float(np.mean(s_mean)),
        "psnr_sample": float(np.mean(q_sample)),
        "ssim_sample": float(np.mean(s_sample)),
        "channel_std": [round(v, 6) for v in std.tolist()],
        "channel_std_min": float(std.min()),
        "channel_std_mean": float(std.mean()),
        "channel_std_max": float(std.max()),
        "channel_mean_abs_max": float(z.mean(dim=(0, 2, 3)).abs().max()),
        # mean posterior std relative to the latent spread: how much a sampled latent moves
        "posterior_std_mean": float(torch.cat(post_std).mean()),
        "dead_channels": dead,
    }
