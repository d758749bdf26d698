"""Training a LightningDiT on tokenizer latents with rectified flow (Lightning).

The network is a plain `nn.Module` from `mdgen.dit`; `FlowModule` holds what training adds
to it: the flow-matching loss, EMA weights, the optimizer, validation at fixed (t, noise)
and logging. `train(...)` wires data, module, checkpoints and the Trainer from plain
arguments, so a notebook can call it without params.yaml.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import functools
import json
import logging
import math
import os
from pathlib import Path

import lightning as L
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from mdgen import flow
from mdgen.dit import LightningDiT, build_dit
from mdgen.io import atomic_path, load_torch_file, save_safetensors
from mdgen.latents import cpu_has_native_bf16, load_stats, read_latents_meta

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data

class LatentDataset(Dataset):
    """Normalised latents of one safetensors file, read item by item from the memory map.

    When the file holds `latents_flip`, each item takes the flipped view with p = 0.5 (the
    upstream augmentation), drawn from torch's global RNG, which `seed_everything` fixes.
    """

    def __init__(self, path: str | Path, stats: dict[str, torch.Tensor], multiplier: float = 1.0,
                 use_flip: bool = True):
        self.path = str(path)
        meta = read_latents_meta(path)
        self.users = meta["users"]
        shapes = meta["tensors"]
        if "latents" not in shapes or "labels" not in shapes:
            raise ValueError(f"{path}: expected tensors 'latents' and 'labels', found {sorted(shapes)}")
        self.n = shapes["latents"][0]
        self.latent_shape = tuple(shapes["latents"][1:])
        self.has_flip = use_flip and "latents_flip" in shapes
        self.mean = stats["mean"][0]
        self.std = stats["std"][0]
        if self.mean.shape[0] != self.latent_shape[0]:
            raise ValueError(f"latent stats have {self.mean.shape[0]} channels but {path} has latents of shape "
                             f"{list(self.latent_shape)}")
        self.multiplier = multiplier
        self._file = None
        with safe_open(self.path, framework="pt") as f:
            self.labels = f.get_tensor("labels")
        bad = ((self.labels < 0) | (self.labels >= len(self.users))).nonzero().flatten()
        if len(bad):
            raise ValueError(f"{path}: label {int(self.labels[bad[0]])} at index {int(bad[0])} is outside "
                             f"the user table [0, {len(self.users)})")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self._file is None:  # opened lazily: each DataLoader worker gets its own handle
            self._file = safe_open(self.path, framework="pt")
        key = "latents"
        if self.has_flip and torch.rand(()) < 0.5:
            key = "latents_flip"
        z = self._file.get_slice(key)[i : i + 1][0]
        z = (z - self.mean) / self.std * self.multiplier
        return z, self.labels[i]


LR_SCHEDULES = ("constant", "cosine", "wsd")


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str = "constant",
              decay_fraction: float = 0.2) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based): linear warm-up, then

    constant; cosine to zero at `max_steps`; or wsd (warm-up, stable, decay), which holds the peak and
    decays linearly to zero over the last `decay_fraction` of the steps. A short CPU run gains from
    ending at a low lr much as from a long EMA, without averaging in early weights (README sweep).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule {schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or max_steps <= warmup_steps:
        return 1.0
    if schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_start = max(warmup_steps, max_steps - round(decay_fraction * max_steps))
    if step < decay_start:
        return 1.0
    return max(0.0, (max_steps - step) / (max_steps - decay_start))


# ----------------------------------------------------------------------------- module

class FlowModule(L.LightningModule):
    """Rectified-flow training of a LightningDiT, with EMA weights and fixed-noise validation."""

    def __init__(self, model_name: str, model_kwargs: dict, *, lr: float = 1e-4, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 0, lr_schedule: str = "constant",
                 lr_decay_fraction: float = 0.2, ema_decay: float = 0.9999, t_sampling: str = "logit_normal",
                 t_mean: float = 0.0, t_std: float = 1.0, cos_weight: float = 1.0,
                 val_t: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 compile: bool = False, seed: int = 0, check_finite_every: int = 1):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.model: LightningDiT = build_dit(model_name, **model_kwargs)
        self.ema: LightningDiT = copy.deepcopy(self.model).requires_grad_(False)
        if compile:
            # in place (Module.compile), so state_dict keys stay the upstream names and a checkpoint
            # written with compile on resumes with it off; compile errors surface at the first call,
            # which `on_fit_start` makes on the training device
            self.model.compile()

    @property
    def compiled(self) -> bool:
        return self.model._compiled_call_impl is not None

    # rows of the compile probe: `train` sets its batch size, so the graph compiled once is the one the
    # steps use (another size would make the first step recompile with a dynamic batch dimension)
    compile_probe_batch = 2

    def compile_or_fallback(self, batch_size: int | None = None) -> bool:
        """Run one forward + backward through the compiled model; on failure warn and go eager.

        torch.compile fails lazily (no C++ compiler, an unsupported op, an old GPU for Triton), so
        without this a run with `train.compile: true` would die at its first step. The probe runs
        under a forked RNG and leaves no gradients, so the seeded run is the same as without it.
        Returns whether the model stays compiled.
        """
        if not self.compiled:
            return False
        cfg = self.model.config
        batch_size = batch_size or self.compile_probe_batch
        shape = (batch_size, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
        devices = [self.device] if self.device.type == "cuda" else []
        # under the Trainer's autocast when attached, so the probe compiles the graph training will run
        context = self._trainer.precision_plugin.train_step_context() if self._trainer else contextlib.nullcontext()
        try:
            with torch.random.fork_rng(devices=devices), context:
                x = torch.randn(shape, device=self.device)
                y = torch.zeros(batch_size, dtype=torch.long, device=self.device)
                self.train_loss((x, y)).backward()
        except Exception as e:  # noqa: BLE001 -- any backend failure: the eager model is still correct
            log.warning("train.compile: torch.compile failed (%s: %s); training eager instead",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            print(f"train: torch.compile failed ({type(e).__name__}); training eager instead")
            self.model._compiled_call_impl = None
        finally:
            self.model.zero_grad(set_to_none=True)
        return self.compiled

    def on_fit_start(self):
        self.compile_or_fallback()

    def train_loss(self, batch) -> torch.Tensor:
        """Flow loss of one (latents, labels) batch through the (compiled) model; no logging, no host sync.

        The forward half of a training step, shared by `training_step` and `mdgen bench`.
        """
        x1, y = batch
        hp = self.hparams
        return flow.flow_loss(self.model, x1, y, cos_weight=hp.cos_weight, t_sampling=hp.t_sampling,
                              t_mean=hp.t_mean, t_std=hp.t_std).loss

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        loss = self.train_loss(batch)
        every = hp.check_finite_every
        if every and self.global_step % every == 0 and not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {self.global_step}; "
                                     "lower train.lr or set train.grad_clip")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.update_ema()

    def update_ema(self) -> None:
        """ema += (1 - decay) * (model - ema) after the optimizer step (also called by `mdgen bench`)."""
        # one fused op over all tensors (no Python loop on the hot path)
        decay = self.hparams.ema_decay
        ema_p = [p for p in self.ema.parameters()]
        cur_p = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - decay)

    def validation_step(self, batch, batch_idx):
        x1, y = batch
        # fixed noise per (batch, t): the val loss of two runs is comparable point by point
        g = torch.Generator().manual_seed(self.hparams.seed * 100003 + batch_idx)
        losses = {"val/loss": [], "val/loss_ema": []}
        for tv in self.hparams.val_t:
            x0 = torch.randn(x1.shape, generator=g).to(x1)
            t = torch.full((x1.shape[0],), tv, device=x1.device)
            # labels kept (eval mode): validation measures the conditional model
            for key, net in (("val/loss", self.model), ("val/loss_ema", self.ema)):
                losses[key].append(flow.flow_loss(net, x1, y, t=t, x0=x0, cos_weight=self.hparams.cos_weight).loss)
        for k, v in losses.items():
            self.log(k, torch.stack(v).mean(), prog_bar=k == "val/loss", sync_dist=True, batch_size=x1.shape[0])

    def make_optimizer(self, fused: bool | None = None) -> torch.optim.AdamW:
        """AdamW on the model's parameters; fused (one kernel for all tensors) by default on CUDA.

        `fused` is for `mdgen bench`, which measures the fused step against the foreach one.
        """
        hp = self.hparams
        fused = self.device.type == "cuda" if fused is None else fused
        return torch.optim.AdamW(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay,
                                 betas=tuple(hp.betas), fused=fused)

    def configure_optimizers(self):
        hp = self.hparams
        opt = self.make_optimizer()
        if not hp.warmup_steps and hp.lr_schedule == "constant":
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
            lr_factor, warmup_steps=hp.warmup_steps, max_steps=self.trainer.max_steps, schedule=hp.lr_schedule,
            decay_fraction=hp.lr_decay_fraction))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ----------------------------------------------------------------------------- checkpoints

class AtomicLastCheckpoint(L.Callback):
    """Write `last.ckpt` every n steps and at the end, via temp file + rename.

    A SIGKILL mid-write then leaves the previous checkpoint intact rather than a torn file.
    """

    def __init__(self, path: str | Path, every_n_steps: int, run_config: dict):
        self.path = Path(path)
        self.every = every_n_steps
        self.run_config = run_config

    def _save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        # every rank calls it; the strategy writes on rank 0 only. weights_only=False (optimizer, loops and
        # RNG state included, which resume needs) said outright, else Lightning logs its default each time
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["mdgen"] = self.run_config

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module):
        self._save(trainer)


def resume_decision(ckpt_path: str | Path, run_config: dict, max_steps: int) -> tuple[bool, str]:
    """(resume?, why) for `train.resume: auto`: resume only a run of the same configuration."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        return False, f"no checkpoint at {ckpt_path}"
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 -- a torn or foreign file must not stop a fresh run
        return False, f"{ckpt_path} is unreadable ({type(e).__name__}: {e})"
    saved = ckpt.get("mdgen")
    if saved != run_config:
        missing = object()
        diff = sorted(k for k in set(run_config) | set(saved or {})
                      if (saved or {}).get(k, missing) != run_config.get(k, missing))
        return False, f"{ckpt_path} was trained with a different configuration (differs in: {', '.join(diff)})"
    step = int(ckpt.get("global_step", 0))
    if step > max_steps:
        return False, f"{ckpt_path} is at step {step}, beyond max_steps {max_steps}"
    return True, f"resuming from {ckpt_path} at step {step}"


def trim_dvclive_history(metrics_dir: str | Path, step: int) -> None:
    """Drop DVCLive rows logged after `step`: a killed run's tail would otherwise repeat on resume."""
    for tsv in Path(metrics_dir).glob("plots/metrics/**/*.tsv"):
        with tsv.open() as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        i = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if int(r[i]) <= step]
        with atomic_path(tsv) as tmp:
            with tmp.open("w", newline="") as f:
                csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)


def _dvclive_logger(**kwargs):
    from dvclive.lightning import DVCLiveLogger
    from lightning.pytorch.utilities import rank_zero_only

    class StepLogger(DVCLiveLogger):
        """Logs at the number of optimizer steps done (`trainer.global_step`, 1-based), as in last.ckpt.

        Lightning's own step is 0-based (DVCLive treats 0 as "no step", so the first two rows would
        collide), and after a resume from a checkpoint written at a validation step it runs one
        ahead of the optimizer steps, which shifted every later row. `train` sets `trainer` before fitting.
        """

        trainer: L.Trainer

        @rank_zero_only
        def log_metrics(self, metrics, step=None, sync=False):
            super().log_metrics(metrics, self.trainer.global_step, sync)

    return StepLogger(**kwargs)


def save_ema(path: str | Path, module: FlowModule, metadata: dict) -> None:
    """EMA weights with upstream LightningDiT key names; every metadata value is JSON-encoded."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in module.ema.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    save_safetensors(state, path, meta)


def read_ema_meta(path: str | Path) -> dict:
    """Metadata of an `ema.safetensors` (model name/config, users, stats hash, ...), without loading weights."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found (run the `train` stage first)")
    with safe_open(str(path), framework="pt") as f:
        raw = dict(f.metadata() or {})
    if "model_config" not in raw or "model_name" not in raw:
        raise ValueError(f"{path}: no model_name/model_config metadata (expected ema.safetensors from `mdgen train`)")
    return {k: json.loads(v) for k, v in raw.items()}


def load_ema(path: str | Path, device: str | torch.device = "cpu") -> tuple[LightningDiT, dict]:
    """Rebuild the model from `ema.safetensors` (config from its metadata) and load it strictly."""
    from safetensors.torch import load_file

    meta = read_ema_meta(path)
    model = LightningDiT(**meta["model_config"])
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval().requires_grad_(False), meta


# ----------------------------------------------------------------------------- upstream .pt checkpoints

# wrappers that prefix state-dict keys: DDP (`module.`) and torch.compile'd modules (`_orig_mod.`)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _unwrap_keys(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        while k.startswith(_WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def _lightning_part(state_dict: dict, part: str) -> dict:
    """The `part.*` tensors of a Lightning state dict (FlowModule's `model` or `ema`), prefix removed."""
    return _unwrap_keys({k[len(part) + 1:]: v for k, v in state_dict.items() if k.startswith(part + ".")})


def read_dit_state(path: str | Path, prefer: tuple[str, ...] = ("ema", "model")) -> tuple[dict, str]:
    """(state dict, where it came from) of a LightningDiT checkpoint, without unpickling code.

    Accepts upstream's training checkpoints (`{'model', 'ema', 'opt', ...}`: the first of `prefer`
    that is present), a bare state dict, mdgen's `ema.safetensors`, or a Lightning `last.ckpt`
    (its `ema.` / `model.` sub-dicts).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DiT checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return _unwrap_keys(load_file(str(path))), "safetensors"
    obj = load_torch_file(path, "DiT checkpoint")
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # Lightning: model.* and ema.* inside
        sd = obj["state_dict"]
        for key in prefer:
            sub = _lightning_part(sd, key)
            if sub:
                return sub, f"state_dict['{key}.*']"
        obj = sd
    for key in prefer:
        if isinstance(obj.get(key), dict):
            return _unwrap_keys(obj[key]), f"'{key}'"
    if obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        return _unwrap_keys(obj), "bare state dict"
    raise ValueError(f"{path}: no DiT weights found: expected one of the keys {list(prefer)} (upstream), "
                     f"'state_dict' (Lightning) or a bare state dict; top-level keys are {sorted(obj)[:10]}")


def init_weights_from(model: torch.nn.Module, path: str | Path) -> dict:
    """Copy every tensor of the checkpoint at `path` whose name and shape fit `model`; report the rest.

    Meant for starting from an upstream ImageNet LightningDiT: its label table has 1001 rows, ours
    one per user plus the null class, so it is skipped (and stays at its initialisation), as is
    anything else that does not fit (another input size's `pos_embed`, another depth's blocks).
    Raises if nothing fits: a wrong `model.name` should not pass as a fine-tune.
    """
    state, source = read_dit_state(path)
    own = model.state_dict()
    loaded, skipped = [], {}
    for k, v in state.items():
        if k not in own:
            skipped[k] = "not in this model"
        elif tuple(v.shape) != tuple(own[k].shape):
            skipped[k] = f"shape {list(v.shape)} in the checkpoint, {list(own[k].shape)} here"
        else:
            loaded.append(k)
    missing = [k for k in own if k not in state]
    if not loaded:
        raise ValueError(f"train.init_from = {path}: none of its {len(state)} tensors fits this model "
                         f"(first: {next(iter(skipped.items()), None)}); check model.name")
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(state[k])
    n_own = sum(v.numel() for v in own.values())
    n_loaded = sum(own[k].numel() for k in loaded)
    return {"path": str(path), "source": source, "loaded": len(loaded), "loaded_fraction": n_loaded / n_own,
            "skipped": skipped, "missing": missing}


def export_upstream(ckpt_path: str | Path, out_path: str | Path) -> dict:
    """Write `{'model': ..., 'ema': ...}` (upstream LightningDiT's checkpoint layout) from `last.ckpt`.

    Upstream's inference scripts load such a file and take `checkpoint['ema']`; the tensors are
    float32 with upstream key names, saved with plain torch.save (loadable with weights_only=True).
    """
    ckpt = load_torch_file(ckpt_path, "training checkpoint")
    sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ValueError(f"{ckpt_path}: not a Lightning checkpoint of `mdgen train` (no 'state_dict')")
    out = {}
    for part in ("model", "ema"):
        out[part] = {k: v.detach().float().contiguous().clone() for k, v in _lightning_part(sd, part).items()}
        if not out[part]:
            raise ValueError(f"{ckpt_path}: no '{part}.*' weights (expected a checkpoint of `mdgen train`)")
    out["config"] = {k: v for k, v in (ckpt.get("mdgen") or {}).items()
                     if k in ("model_name", "model_kwargs", "users")}
    out["step"] = int(ckpt.get("global_step", 0))
    with atomic_path(out_path) as tmp:
        torch.save(out, tmp)
    return {"path": str(out_path), "tensors": len(out["ema"]), "step": out["step"]}


def auto_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16-mixed on a GPU and on a CPU with native bf16 (see `cpu_has_native_bf16`), else 32-true."""
    if precision != "auto":
        return precision
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed"
    return "bf16-mixed" if accelerator in ("auto", "cpu") and cpu_has_native_bf16() else "32-true"


# ----------------------------------------------------------------------------- the run

def file_sha256(path: str | Path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def train(*, train_path: str | Path, val_path: str | Path, stats_path: str | Path, out_dir: str | Path,
          metrics_dir: str | Path, model_name: str, model_kwargs: dict, max_steps: int, batch_size: int,
          lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 0,
          lr_schedule: str = "constant", lr_decay_fraction: float = 0.2, grad_clip: float | None = None,
          ema_decay: float = 0.9999, t_sampling: str = "logit_normal",
          t_mean: float = 0.0, t_std: float = 1.0, cos_weight: float = 1.0, latent_multiplier: float = 1.0,
          use_flip: bool = True, checkpoint_every: int = 100, val_every: int = 100, resume: str = "auto",
          accelerator: str = "auto", devices: int | str = 1, num_nodes: int = 1, strategy: str = "auto",
          precision: str = "auto", compile: bool = False, deterministic: bool = False, seed: int = 0,
          num_workers: int = 0, init_from: str | Path | None = None, log_every: int = 10, progress: bool = True,
          callbacks: list[L.Callback] | None = None) -> dict:
    """Train (or resume) and write `last.ckpt` and `ema.safetensors` into `out_dir`; returns final metrics."""
    out_dir, metrics_dir = Path(out_dir), Path(metrics_dir)
    stats = load_stats(stats_path)
    # checked here, before the datasets, so that the message names the stats file
    latents_shape = read_latents_meta(train_path)["tensors"].get("latents")
    if latents_shape is not None and stats["mean"].shape[1] != latents_shape[1]:
        raise ValueError(f"latent stats have {stats['mean'].shape[1]} channels in {stats_path}, but {train_path} has "
                         f"latents of shape {list(latents_shape[1:])} (re-run the `stats` stage)")
    train_ds = LatentDataset(train_path, stats, latent_multiplier, use_flip)
    val_ds = LatentDataset(val_path, stats, latent_multiplier, use_flip=False)
    if train_ds.users != val_ds.users:
        raise ValueError(f"users differ between {train_path} ({len(train_ds.users)}: {train_ds.users[:5]}...) and "
                         f"{val_path} ({len(val_ds.users)}: {val_ds.users[:5]}...); re-run `extract`")
    c, h, w = train_ds.latent_shape
    model_kwargs = {**model_kwargs, "num_classes": len(train_ds.users), "in_channels": c, "input_size": h}
    precision = auto_precision(precision, accelerator)

    # what must match for `resume: auto` to continue a checkpoint (a constant-lr run's length may grow)
    run_config = {
        "model_name": model_name, "model_kwargs": model_kwargs, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "betas": list(betas), "warmup_steps": warmup_steps, "grad_clip": grad_clip,
        "ema_decay": ema_decay, "t_sampling": t_sampling, "t_mean": t_mean, "t_std": t_std,
        "cos_weight": cos_weight, "latent_multiplier": latent_multiplier, "use_flip": use_flip, "seed": seed,
        "precision": precision, "users": train_ds.users, "train_sha256": file_sha256(train_path),
        "stats_sha256": file_sha256(stats_path),
    }
    if lr_schedule != "constant":
        # only when set, as init_from; a decaying schedule is fixed by its length, so a run to more
        # steps starts fresh rather than resuming at an lr that jumps back up
        run_config.update(lr_schedule=lr_schedule, schedule_steps=max_steps)
        if lr_schedule == "wsd":
            run_config["lr_decay_fraction"] = lr_decay_fraction
    if init_from:  # only when set: checkpoints written before the option existed still resume
        run_config["init_from_sha256"] = file_sha256(init_from)
    last = out_dir / "last.ckpt"
    ckpt_path = None
    if resume == "auto":
        ok, why = resume_decision(last, run_config, max_steps)
        log.info("train.resume=auto: %s", why if ok else f"starting fresh: {why}")
        print(f"train: {why}" if ok else f"train: starting fresh ({why})")
        if ok:
            ckpt_path = str(last)
            trim_dvclive_history(metrics_dir, int(torch.load(last, map_location="cpu", weights_only=True,
                                                             mmap=True)["global_step"]))
    elif resume != "never":
        raise ValueError(f"train.resume = {resume!r}: expected 'auto' or 'never'")

    L.seed_everything(seed, workers=True, verbose=False)
    module = FlowModule(model_name, model_kwargs, lr=lr, weight_decay=weight_decay, betas=tuple(betas),
                        warmup_steps=warmup_steps, lr_schedule=lr_schedule, lr_decay_fraction=lr_decay_fraction,
                        ema_decay=ema_decay, t_sampling=t_sampling, t_mean=t_mean,
                        t_std=t_std, cos_weight=cos_weight, compile=compile, seed=seed,
                        check_finite_every=1 if accelerator == "cpu" or not torch.cuda.is_available() else log_every)
    module.compile_probe_batch = batch_size
    if init_from and ckpt_path is None:
        report = init_weights_from(module.model, init_from)
        module.ema.load_state_dict(module.model.state_dict())
        skipped = ", ".join(f"{k} ({why})" for k, why in list(report["skipped"].items())[:4])
        print(f"train: initialised {report['loaded']} tensors ({100 * report['loaded_fraction']:.1f} % of the "
              f"parameters) from {init_from} [{report['source']}]; skipped {len(report['skipped'])}"
              f"{': ' + skipped if skipped else ''}{' ...' if len(report['skipped']) > 4 else ''}; "
              f"{len(report['missing'])} of this model's tensors keep their initialisation")
    if len(train_ds) < batch_size:
        raise ValueError(f"train.batch_size = {batch_size} but {train_path} holds only {len(train_ds)} latents")
    loader_kw = dict(num_workers=num_workers, persistent_workers=num_workers > 0,
                     pin_memory=torch.cuda.is_available())
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True, **loader_kw)
    val_dl = DataLoader(val_ds, batch_size=batch_size, shuffle=False, **loader_kw)

    out_dir.mkdir(parents=True, exist_ok=True)
    logger = _dvclive_logger(dir=str(metrics_dir), dvcyaml=False, save_dvc_exp=False, resume=ckpt_path is not None)
    trainer = L.Trainer(
        max_steps=max_steps, max_epochs=-1, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        strategy=strategy, precision=precision, gradient_clip_val=grad_clip, deterministic=deterministic,
        logger=logger, callbacks=[AtomicLastCheckpoint(last, checkpoint_every, run_config), *(callbacks or [])],
        enable_checkpointing=False, val_check_interval=val_every, check_val_every_n_epoch=None,
        log_every_n_steps=log_every, enable_progress_bar=progress, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    logger.trainer = trainer
    trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt_path)
    if trainer.global_step % val_every:  # the loop validated last before the final steps
        trainer.validate(module, val_dl, verbose=False)
    val = dict(trainer.callback_metrics)
    if "val/loss" not in val:
        # resumed a finished run (e.g. `dvc repro -f`): nothing trained, so measure the checkpoint
        # without logging, which would repeat the last step's row in the DVCLive curves
        val = L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False,
                        enable_progress_bar=False, enable_model_summary=False).validate(module, val_dl, verbose=False)[0]
    metrics = {k: float(v) for k, v in val.items() if k.startswith("val/")}
    metrics["step"] = int(trainer.global_step)
    if trainer.is_global_zero:
        save_ema(out_dir / "ema.safetensors", module, {
            "model_name": model_name, "model_config": module.model.config, "users": train_ds.users,
            "latent_multiplier": latent_multiplier, "latent_shape": list(train_ds.latent_shape),
            "stats_sha256": run_config["stats_sha256"], "step": int(trainer.global_step),
            "tokenizer_sha256": read_latents_meta(train_path).get("tokenizer_sha256", ""),
        })
    return metrics
