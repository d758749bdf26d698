"""User identification from a spectrogram: a compact ResNet-18-style CNN, small enough for a CPU.

It is the judge of the pipeline: trained on real train images only, it scores how
recognisably generated samples show the requested person (conditional accuracy), and its
penultimate features are the space in which `mdgen.metrics` measures FID, KID,
precision/recall and memorisation -- an identity-aware replacement for Inception features,
which know nothing about micro-Doppler.

Layout follows ResNet-18 (He et al. 2016): a stem, four stages of two BasicBlocks with
widths w, 2w, 4w, 8w (stride 2 from the second stage on), global average pooling, a linear
head. The stem is one 3x3 stride-2 convolution without max-pooling: ResNet's 7x7/2 + pool
divides by 4 at once, too coarse for 64-96 px inputs where one row is already ~0.1 m/s.

    model = train_classifier(images, labels, 8, params.load().classifier, seed=0)  # the `classifier` section
    probs = predict(model, images)            # [N, classes]
    feats = features(model, images)           # [N, 8 * width]
    save_classifier(model, "models/classifier.safetensors", users=["ID_1", ...])
"""
from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from mdgen.accel import autocast_dtype
from mdgen.errors import BadFileError, MissingFileError
from mdgen.images import center_crop_arr, to_tensor
from mdgen.io import read_safetensors, save_safetensors
from mdgen.params import ClassifierConfig
from mdgen.schedules import lr_factor


@dataclass(frozen=True)
class ResNetConfig:
    """The network's shape; how it is trained is params.yaml's `classifier` section (`mdgen.params.ClassifierConfig`)."""
    num_classes: int
    image_size: int = 64          # inputs are resized to image_size x image_size before the stem
    width: int = 16               # channels of the first stage; the stages use w, 2w, 4w, 8w
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # BasicBlocks per stage: ResNet-18


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """3x3 -> BN -> ReLU -> 3x3 -> BN, plus the identity (or a 1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SpectrogramResNet(nn.Module):
    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        stages, cin = [], w
        for i, n in enumerate(config.blocks):
            cout = w * 2 ** i
            stages.append(nn.Sequential(*[BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1)
                                          for j in range(n)]))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, config.num_classes)
        self.initialize_weights()

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def initialize_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # zero the last BN of each residual branch: every block starts as the identity, which
        # trains faster and more stably in few steps (Goyal et al. 2017, "zero-gamma")
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)                    # (N, w, S/2, S/2)
        x = self.stages(x)                  # (N, 8w, S/16, S/16)
        return x.mean(dim=(2, 3))           # (N, 8w): global average pool, the penultimate features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, num_classes) logits


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------

def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, image_size, image_size, 3] through ADM's `center_crop_arr` (BOX halving,
    then bicubic), the path `load_image(file, image_size)` takes; images already that size are returned as
    they are, so resizing once up front changes nothing downstream."""
    images = np.asarray(images)
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3, \
        f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}"
    if images.shape[1:3] == (image_size, image_size):
        return images
    if not len(images):
        return np.zeros((0, image_size, image_size, 3), np.uint8)
    return np.stack([center_crop_arr(Image.fromarray(im), image_size) for im in images])


def prepare(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, image_size, image_size] in [-1, 1] (`resize_images`, so a 256 px
    array and its file give the same input)."""
    return to_tensor(np.ascontiguousarray(resize_images(images, image_size)))


def time_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image along the time (width) axis by up to +-max_shift columns, reflecting at the edges.

    The only augmentation: a recording starts at a random gait phase, so a time shift keeps the
    person. Anything along the Doppler (height) axis would move the torso velocity, which is
    part of who they are; so would colour jitter (it changes the dB scale).
    """
    if max_shift <= 0:
        return x
    padded = F.pad(x, (max_shift, max_shift, 0, 0), mode="reflect")
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0],), generator=generator).tolist()
    w = x.shape[-1]
    return torch.stack([padded[i, :, :, o:o + w] for i, o in enumerate(offsets)])


# --------------------------------------------------------------------------------------
# Training and inference
# --------------------------------------------------------------------------------------

def train_classifier(images: np.ndarray, labels, num_classes: int, config: ClassifierConfig, seed: int,
                     progress: str | None = None) -> SpectrogramResNet:
    """Train from scratch on uint8 images [N, H, W, 3] with integer labels as the `classifier` section says;
    returns the model in eval mode (a ResNet-18's blocks; config.threads is the caller's: accel.set_threads).

    Length is counted in optimiser steps, not epochs, so that training sets of different sizes
    (few-shot real vs real + generated in the augmentation-gain experiment) get equal compute.
    Batches walk through seeded permutations of the data (epoch after epoch); AdamW with a
    linear warm-up over the first 5 % of steps, then cosine decay to zero; forward and backward under bf16
    autocast where `config.precision` says so (fp32 weights, returned for fp32 scoring). Everything random
    (weights, order, augmentation) comes from `seed`, so a run repeats exactly on the same CPU.
    `progress`: the label of a progress bar (steps done, rate, time left) on stderr; None: silent.
    """
    steps, batch_size, image_size, width = config.steps, config.batch_size, config.image_size, config.width
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    x = prepare(images, image_size)
    n = x.shape[0]
    if n == 0 or n != labels.numel():
        raise ValueError(f"train_classifier: {n} images and {labels.numel()} labels (need as many, at least one)")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"train_classifier: labels span {int(labels.min())}..{int(labels.max())}, "
                         f"outside 0..{num_classes - 1}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"train_classifier: steps={steps}, batch_size={batch_size}; expected positive integers")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SpectrogramResNet(ResNetConfig(num_classes, image_size, width))
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN and biases: decaying them only hurts
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
        lr_factor, warmup_steps=max(1, steps // 20), max_steps=steps, schedule="cosine"))
    batch_size = min(batch_size, n)
    max_shift = image_size // 8 if config.augment else 0
    dtype = autocast_dtype(torch.device("cpu"), config.precision)
    # oneDNN's convolutions run on NHWC without reordering every layer's activations (faster in fp32 too)
    model.train().to(memory_format=torch.channels_last)
    order = torch.empty(0, dtype=torch.long)
    bar = tqdm(total=steps, desc=progress, unit="step", disable=progress is None, mininterval=5.0)
    with _conv_kernels(width), bar:
        for _ in range(steps):
            if order.numel() < batch_size:
                order = torch.cat([order, torch.randperm(n, generator=gen)])
            idx, order = order[:batch_size], order[batch_size:]
            xb = time_shift(x[idx], max_shift, gen).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(xb), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval().to(memory_format=torch.contiguous_format)


@dataclass
class Job:
    """One classifier to train (`train_classifier` on images, labels, seed) and the sets to score it on;
    `steps` over the recipe's (the few-shot arm trains shorter than the judge's recipe); `keep_model`: the
    trained weights come back too (`fit_classifiers`)."""
    images: np.ndarray
    labels: np.ndarray
    seed: int
    tests: dict[str, tuple[np.ndarray, np.ndarray]]
    steps: int | None = None
    keep_model: bool = False


def _fit_and_score(job: Job, num_classes: int, config: ClassifierConfig
                   ) -> tuple[dict[str, float], dict[str, torch.Tensor] | None]:
    if job.steps is not None:
        config = replace(config, steps=job.steps)
    model = train_classifier(job.images, job.labels, num_classes, config, job.seed)
    return {name: accuracy(model, x, y) for name, (x, y) in job.tests.items()}, \
        (model.state_dict() if job.keep_model else None)


def _worker_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


def fit_and_score(jobs: list[Job], num_classes: int, config: ClassifierConfig, workers: int = 1,
                  say=None) -> list[dict[str, float]]:
    """Train one classifier per job and return each one's accuracy on its test sets, in job order
    (`fit_classifiers` without the weights)."""
    return [scores for scores, _ in fit_classifiers(jobs, num_classes, config, workers, say)]


def fit_classifiers(jobs: list[Job], num_classes: int, config: ClassifierConfig, workers: int = 1,
                    say=None) -> list[tuple[dict[str, float], SpectrogramResNet | None]]:
    """Train one classifier per job: per job, in job order, its accuracy on each of its test sets and, for a
    job with `keep_model`, the trained model (eval mode), else None.

    `workers` > 1 trains that many side by side in spawned processes of `config.threads` threads each: the
    classifiers are small, one thread each uses a core best, and each job is seeded, so the figures (and the
    weights) are those of one process. Images go to the workers at the classifier's input size
    (`resize_images`), not at 256 px. `say`: a line per finished job.
    """
    size = config.image_size
    jobs = [Job(resize_images(j.images, size), np.asarray(j.labels), j.seed,
                {k: (resize_images(x, size), np.asarray(y)) for k, (x, y) in j.tests.items()}, j.steps,
                j.keep_model) for j in jobs]
    out = _run_jobs(jobs, num_classes, config, workers, say)
    return [(scores, None if state is None else _model_from(state, num_classes, config)) for scores, state in out]


def _model_from(state: dict[str, torch.Tensor], num_classes: int, config: ClassifierConfig) -> SpectrogramResNet:
    model = SpectrogramResNet(ResNetConfig(num_classes, config.image_size, config.width))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _run_jobs(jobs: list[Job], num_classes: int, config: ClassifierConfig, workers: int, say) -> list:
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for i, job in enumerate(jobs):
            out.append(_fit_and_score(job, num_classes, config))
            if say:
                say(f"classifier {i + 1} of {len(jobs)} trained")
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child inherits the parent's OpenMP state and can hang in its first kernel
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_threads, initargs=(config.threads,)) as pool:
        # the longest first: the last to finish are then short ones, and no process waits long on the other
        longest_first = sorted(range(len(jobs)), key=lambda i: -(jobs[i].steps or config.steps))
        futures = {pool.submit(_fit_and_score, jobs[i], num_classes, config): i for i in longest_first}
        out: list = [None] * len(jobs)
        for done, f in enumerate(as_completed(futures), 1):
            out[futures[f]] = f.result()
            if say:
                say(f"classifier {done} of {len(jobs)} trained ({min(workers, len(jobs))} processes)")
    return out


def _conv_kernels(width: int):
    """torch 2.13's oneDNN corrupts the heap in single-threaded convolution backward with fewer than 8 channels
    on AVX2-only CPUs (`free(): invalid pointer`, then an abort); such tiny widths (tests, quick trials) take
    ATen's own kernels. Widths from 8 up, the default 16 included, keep oneDNN and its results."""
    return contextlib.nullcontext() if width >= 8 else torch.backends.mkldnn.flags(enabled=False)


@torch.no_grad()
def _batched(model: SpectrogramResNet, images: np.ndarray, fn, batch_size: int) -> torch.Tensor:
    model.eval()
    outs = []
    for start in range(0, len(images), batch_size):
        outs.append(fn(prepare(images[start:start + batch_size], model.config.image_size)))
    return torch.cat(outs) if outs else torch.zeros(0)


def predict(model: SpectrogramResNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities float32 [N, num_classes] for uint8 images [N, H, W, 3]."""
    out = _batched(model, images, lambda x: F.softmax(model(x), dim=1), batch_size)
    return out.reshape(len(images), model.config.num_classes).numpy()


def features(model: SpectrogramResNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Penultimate (global-average-pooled) features float64 [N, 8 * width] for uint8 images [N, H, W, 3]."""
    out = _batched(model, images, model.features, batch_size)
    return out.reshape(len(images), model.feature_dim).double().numpy()


def accuracy(model: SpectrogramResNet, images: np.ndarray, labels) -> float:
    labels = np.asarray(labels)
    return float(np.mean(predict(model, images).argmax(1) == labels)) if len(labels) else float("nan")


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------

def save_classifier(model: SpectrogramResNet, path: str | Path, users: list[str] | None = None,
                    extra: dict[str, str] | None = None) -> None:
    """Weights and BN buffers as .safetensors; metadata: `config` (JSON) and `users` (JSON list, label order)."""
    cfg = asdict(model.config)
    if users is not None and len(users) != model.config.num_classes:
        raise ValueError(f"save_classifier: {len(users)} users for a {model.config.num_classes}-class model")
    meta = {"config": json.dumps(cfg), "users": json.dumps(users or [])}
    meta.update(extra or {})
    save_safetensors({k: v.detach().cpu() for k, v in model.state_dict().items()}, path, metadata=meta)


def load_classifier(path: str | Path) -> tuple[SpectrogramResNet, dict]:
    """(eval-mode model, metadata) from `save_classifier`; loads strictly, so a mismatched file fails here."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"classifier {path} not found (run the `classifier` stage)")
    meta, state = read_safetensors(path, "classifier")
    if "config" not in meta:
        raise BadFileError(f"{path}: no 'config' metadata (expected a file written by save_classifier)")
    cfg = json.loads(meta["config"])
    cfg["blocks"] = tuple(cfg["blocks"])
    model = SpectrogramResNet(ResNetConfig(**cfg))
    model.load_state_dict(state, strict=True)
    meta["users"] = json.loads(meta.get("users", "[]"))
    return model.eval(), meta
