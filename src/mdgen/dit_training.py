"""Training a LightningDiT on tokenizer latents with rectified flow (Lightning).

`train(model, config, seed, ...)` runs params.yaml's `model` and `train` sections (`mdgen.params.ModelConfig`,
`TrainConfig`) and stores them in `last.ckpt`, so that `train.resume: auto` continues only a run that would
end the same (`mdgen.resume`). The network is a plain `nn.Module` from `mdgen.dit`; `FlowModule` is the thin
LightningModule around it that adds the flow-matching loss, EMA weights, the optimizer, validation at fixed
(t, noise) and logging. Checkpoint and weight files are `mdgen.checkpoints`'.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import functools
import logging
import os
import random
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset, Sampler

from mdgen import flow
from mdgen.accel import compiled_or_eager, lightning_precision
from mdgen.checkpoints import init_weights_from, resume_decision, save_ema
from mdgen.dit import LightningDiT, build_dit
from mdgen.errors import BadFileError, DataError, DivergedError, MissingFileError, ParamsError
from mdgen.io import TEMP_SUFFIX, atomic_path, file_sha256
from mdgen.params import ModelConfig, TrainConfig
from mdgen.latents import load_stats, normalize, read_latents_meta
from mdgen.schedules import lr_factor

log = logging.getLogger(__name__)

# under DDP every rank runs the `train` stage: only global rank zero prints and writes files
say = rank_zero_only(print)


def is_rank_zero() -> bool:
    """Whether this process is global rank zero (also before a Trainer exists: Lightning reads the rank
    that its launcher, torchrun or SLURM put in the environment)."""
    return rank_zero_only.rank == 0


# ----------------------------------------------------------------------------- what a resumed run must share

# train.* settings a run may change and still continue a checkpoint: where and how it runs, how often it
# saves, validates and logs. Everything else changes what is trained (the resolved precision is compared
# through the run record).
RUN_ONLY = ("max_steps", "epochs", "checkpoint_every", "val_every", "resume", "accelerator", "devices", "strategy", "precision",
            "compile", "deterministic", "num_workers", "init_from", "log_every")


def fingerprint(record: dict) -> dict:
    """The part of a run record (`last.ckpt`'s "mdgen") that must be equal for `train.resume: auto` to continue."""
    train = record["train"]
    out = {**record, "train": {k: v for k, v in train.items() if k not in RUN_ONLY}}
    if train.get("lr_schedule") != "constant":  # a decaying schedule is fixed by its length
        out["train"]["max_steps"] = train.get("max_steps")
    return out


# ----------------------------------------------------------------------------- data

class LatentDataset(Dataset):
    """Normalised latents of one safetensors file, read item by item from the memory map.

    An item is an index, or `(index, flipped)` from `StepBatches`: flipped items take `latents_flip`
    (the upstream augmentation) when the file holds it and `use_flip` is on.
    """

    def __init__(self, path: str | Path, stats: dict[str, torch.Tensor], multiplier: float = 1.0,
                 use_flip: bool = True):
        self.path = str(path)
        meta = read_latents_meta(path)
        self.users = meta["users"]
        shapes = meta["tensors"]
        if "latents" not in shapes or "labels" not in shapes:
            raise BadFileError(f"{path}: expected tensors 'latents' and 'labels', found {sorted(shapes)}")
        self.n = shapes["latents"][0]
        self.latent_shape = tuple(shapes["latents"][1:])
        self.has_flip = use_flip and "latents_flip" in shapes
        self.stats = {k: stats[k][0] for k in ("mean", "std")}  # [C, 1, 1]: per item, no batch dimension
        if self.stats["mean"].shape[0] != self.latent_shape[0]:
            raise BadFileError(f"latent stats have {self.stats['mean'].shape[0]} channels but {path} has latents of "
                               f"shape {list(self.latent_shape)}")
        self.multiplier = multiplier
        self._file = None
        with safe_open(self.path, framework="pt") as f:
            self.labels = f.get_tensor("labels")
        bad = ((self.labels < 0) | (self.labels >= len(self.users))).nonzero().flatten()
        if len(bad):
            raise BadFileError(f"{path}: label {int(self.labels[bad[0]])} at index {int(bad[0])} is outside "
                               f"the user table [0, {len(self.users)})")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: int | tuple[int, bool]):
        i, flipped = item if isinstance(item, tuple) else (item, False)
        if self._file is None:  # opened lazily: each DataLoader worker gets its own handle
            self._file = safe_open(self.path, framework="pt")
        key = "latents_flip" if flipped and self.has_flip else "latents"
        z = self._file.get_slice(key)[i : i + 1][0]
        return normalize(z, self.stats, self.multiplier), self.labels[i]


class StepBatches(Sampler):
    """The training batches of an endless run, each a pure function of (seed, step, rank): `[(index, flipped), ...]`.

    Epochs are fresh permutations of the n latents (with a coin per latent for the flip), drawn from
    numpy's generator seeded with (seed, epoch); step s of each epoch takes its slice, one batch per rank,
    the remainder is dropped. Nothing comes from the global RNG and nothing depends on the steps before,
    so a run resumed at `start_step` sees exactly the batches an unbroken run would, and the flow noise
    (the global RNG, saved in `last.ckpt`) is not shifted by data loading. Under DDP each rank takes its own
    batch of the same global slice (Lightning's distributed sampler is off: it would shuffle by epoch).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0):
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, e])
        return rng.permutation(self.n), rng.random(self.n) < 0.5

    def __iter__(self):
        rank, world = ((torch.distributed.get_rank(), torch.distributed.get_world_size())
                       if torch.distributed.is_available() and torch.distributed.is_initialized() else (0, 1))
        per_epoch = self.n // (self.batch_size * world)
        if per_epoch == 0:
            raise DataError(f"train.batch_size = {self.batch_size} on {world} device(s) needs {self.batch_size * world} "
                            f"latents per step, but the training set holds {self.n}")
        step, cached = self.start_step, (None, None)
        while True:
            e, j = divmod(step, per_epoch)
            if cached[0] != e:
                cached = (e, self.epoch(e))
            perm, flips = cached[1]
            lo = (j * world + rank) * self.batch_size
            yield [(int(i), bool(flips[i])) for i in perm[lo:lo + self.batch_size]]
            step += 1


def rng_states() -> dict:
    """Every global RNG training draws from (torch CPU and CUDA, numpy, Python), as plain tensors and lists
    that a `weights_only` load accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": [version, list(state), gauss]}


def set_rng_states(states: dict) -> None:
    """Restore what `rng_states` returned."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))

# ----------------------------------------------------------------------------- module

class FlowModule(L.LightningModule):
    """Rectified-flow training of a `LightningDiT`, with EMA weights and fixed-noise validation."""

    def __init__(self, model: LightningDiT, config: TrainConfig, seed: int):
        super().__init__()
        self.config = config
        self.seed = seed
        self.model = model
        self.ema: LightningDiT = copy.deepcopy(model).requires_grad_(False)
        # the training forward: compiled or not, the parameters (and state_dict keys, the upstream names)
        # stay self.model's, so a checkpoint written with compile on resumes with it off. A function, not a
        # Module attribute, so that it is not registered as a second copy of the model. Compile errors
        # surface at the first call, which `on_fit_start` makes on the training device.
        self.forward_fn = torch.compile(model.forward) if config.compile else model.forward
        self.compiled = config.compile

    def on_fit_start(self):
        if self.compiled:
            self.compiled = compiled_or_eager(self._compile_probe, self._uncompile, "train")

    def _compile_probe(self) -> None:
        """One forward + backward at the training batch size, under the Trainer's autocast when attached,
        so the graph compiled here is the one the steps use. Under a forked RNG and leaving no
        gradients, so the seeded run is the same as without it."""
        cfg = self.model.config
        n = self.config.batch_size
        shape = (n, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
        devices = [self.device] if self.device.type == "cuda" else []
        context = self._trainer.precision_plugin.train_step_context() if self._trainer else contextlib.nullcontext()
        try:
            with torch.random.fork_rng(devices=devices), context:
                x = torch.randn(shape, device=self.device)
                y = torch.zeros(n, dtype=torch.long, device=self.device)
                self.train_loss((x, y)).backward()
        finally:
            self.model.zero_grad(set_to_none=True)

    def _uncompile(self) -> None:
        self.forward_fn = self.model.forward

    def train_loss(self, batch) -> torch.Tensor:
        """Flow loss of one (latents, labels) batch through the (compiled) model; no logging, no host sync."""
        x1, y = batch
        c = self.config
        return flow.flow_loss(self.forward_fn, x1, y, cos_weight=c.cos_weight, t_sampling=c.t_sampling,
                              t_mean=c.t_mean, t_std=c.t_std).loss

    def training_step(self, batch, batch_idx):
        loss = self.train_loss(batch)
        # a host sync per check: every step on CPU, where it is free, every log_every steps on a GPU
        every = 1 if self.device.type == "cpu" else self.config.log_every
        if self.global_step % every == 0 and not torch.isfinite(loss):
            raise DivergedError(f"non-finite training loss {loss.item()} at step {self.global_step}; "
                                     "lower train.lr or set train.grad_clip")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_before_optimizer_step(self, optimizer):
        self.log("train/lr", optimizer.param_groups[0]["lr"])  # the lr this step runs at

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        # here rather than in on_train_batch_end, which Lightning calls after the callbacks' hook: a checkpoint
        # written there would hold the EMA of one step before its weights, and a resumed run would lag one update
        self.update_ema()

    def update_ema(self) -> None:
        """ema += (1 - decay) * (model - ema) after the optimizer step, one fused op over all tensors."""
        ema_p = list(self.ema.parameters())
        cur_p = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - self.config.ema_decay)

    def validation_step(self, batch, batch_idx):
        x1, y = batch
        c = self.config
        # fixed noise per (batch, t): the val loss of two runs is comparable point by point
        g = torch.Generator().manual_seed(self.seed * 100003 + batch_idx)
        losses = {"val/loss": [], "val/loss_ema": []}
        for tv in c.val_t:
            x0 = torch.randn(x1.shape, generator=g).to(x1)
            t = torch.full((x1.shape[0],), tv, device=x1.device)
            # labels kept (eval mode): validation measures the conditional model
            for key, net in (("val/loss", self.model), ("val/loss_ema", self.ema)):
                losses[key].append(flow.flow_loss(net, x1, y, t=t, x0=x0, cos_weight=c.cos_weight).loss)
        for k, v in losses.items():
            self.log(k, torch.stack(v).mean(), prog_bar=k == "val/loss", sync_dist=True, batch_size=x1.shape[0])

    def configure_optimizers(self):
        c = self.config
        # fused: one kernel for all tensors, on CUDA only
        opt = torch.optim.AdamW(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay, betas=c.betas,
                                fused=self.device.type == "cuda")
        if not c.warmup_steps and c.lr_schedule == "constant":
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
            lr_factor, warmup_steps=c.warmup_steps, max_steps=self.trainer.max_steps, schedule=c.lr_schedule,
            decay_fraction=c.lr_decay_fraction))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ----------------------------------------------------------------------------- checkpoints and logs

class AtomicLastCheckpoint(L.Callback):
    """Write `last.ckpt` every n steps and at the end, via temp file + rename, with the global RNG states.

    A SIGKILL mid-write then leaves the previous checkpoint intact rather than a torn file (the temp
    name is this process's own, so two writers never share one; `exclusive_writer` removes a dead one's).
    The RNG states saved with the weights are restored just before the first step of a resumed run, so
    it draws the flow noise, times and label dropout that an unbroken run draws from there.
    """

    def __init__(self, path: str | Path, every_n_steps: int, record: dict):
        self.path = Path(path)
        self.every = every_n_steps
        self.record = record
        self._resumed_rng: dict | None = None

    def _save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}{TEMP_SUFFIX}")
        # every rank calls it; the strategy writes on rank 0 only. weights_only=False (optimizer, loops and
        # RNG state included, which resume needs) said outright, else Lightning logs its default each time
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["mdgen"] = self.record
        checkpoint["mdgen_rng"] = rng_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._resumed_rng = checkpoint.get("mdgen_rng")

    def on_train_start(self, trainer, pl_module):
        # here, not at load: after the compile probe and the data loader's start, right before the first step
        if self._resumed_rng is not None:
            set_rng_states(self._resumed_rng)
            self._resumed_rng = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module):
        self._save(trainer)


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
            # Lightning adds the epoch to every row: in a run measured in steps it only draws a flat line
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            if metrics:
                super().log_metrics(metrics, self.trainer.global_step, sync)

    return StepLogger(**kwargs)


# ----------------------------------------------------------------------------- the run

def train(model: ModelConfig, config: TrainConfig, seed: int, *, train_path: str | Path, val_path: str | Path,
          stats_path: str | Path, out_dir: str | Path, metrics_dir: str | Path, progress: bool = True,
          callbacks: list[L.Callback] | None = None) -> dict:
    """Train (or resume) the `model` section's DiT as the `train` section says, and write `last.ckpt` and
    `ema.safetensors` into `out_dir`; returns final metrics.

    Under DDP every rank calls this (Lightning's launcher re-runs the command per device) and gets the
    same metrics back; files are written by global rank zero only (see `is_rank_zero`).
    """
    c = config
    if c.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ParamsError(f"train.accelerator = {c.accelerator!r}, but torch {torch.__version__} sees no CUDA GPU "
                         "(a CPU build, or no driver); use train.accelerator: auto or cpu")
    if c.init_from is not None and not Path(c.init_from).is_file():
        raise MissingFileError(f"train.init_from = {c.init_from}: no such file (expected an upstream LightningDiT "
                               "checkpoint, or null for a random init)")
    out_dir, metrics_dir = Path(out_dir), Path(metrics_dir)
    train_ds, val_ds = _datasets(c, train_path, val_path, stats_path)
    if c.max_steps is None:
        c = dataclasses.replace(c, max_steps=c.steps_for(len(train_ds)), epochs=None)
        say(f"train: {c.max_steps} steps: {config.epochs:g} epochs of {len(train_ds)} train latents at batch "
            f"{c.batch_size}")
    ch, h, _ = train_ds.latent_shape
    model_kwargs = {"class_dropout_prob": model.class_dropout_prob, "use_qknorm": model.use_qknorm,
                    "attention": model.attention, **model.overrides,
                    "num_classes": len(train_ds.users), "in_channels": ch, "input_size": h}
    precision = lightning_precision(c.precision, c.accelerator)
    # what `last.ckpt` stores: the config, and what it resolved to on this data and machine
    record = {"seed": seed, "model": dataclasses.asdict(model), "train": dataclasses.asdict(c),
              "model_kwargs": model_kwargs, "precision": precision,
              "users": train_ds.users, "train_sha256": file_sha256(train_path), "stats_sha256": file_sha256(stats_path),
              "init_from_sha256": file_sha256(c.init_from) if c.init_from else None}
    last = out_dir / "last.ckpt"
    ckpt_path = _resume_from(c, last, record, metrics_dir)

    L.seed_everything(seed, workers=True, verbose=False)
    module = FlowModule(build_dit(model.name, **model_kwargs), c, seed)
    if c.init_from and ckpt_path is None:
        _init_from(module, c.init_from)
    if len(train_ds) < c.batch_size:
        raise DataError(f"train.batch_size = {c.batch_size} but {train_path} holds only {len(train_ds)} latents")
    # each loader's own generator seeds its workers: a loader started (or restarted) mid-run never draws from
    # the global RNG that the flow noise comes from
    loader_kw = dict(num_workers=c.num_workers, persistent_workers=c.num_workers > 0,
                     pin_memory=torch.cuda.is_available())
    start_step = _checkpoint_step(ckpt_path) if ckpt_path else 0
    train_dl = DataLoader(train_ds, batch_sampler=StepBatches(len(train_ds), c.batch_size, seed, start_step),
                          generator=torch.Generator().manual_seed(seed), **loader_kw)
    val_dl = DataLoader(val_ds, batch_size=c.batch_size, shuffle=False,
                        generator=torch.Generator().manual_seed(seed), **loader_kw)

    out_dir.mkdir(parents=True, exist_ok=True)
    logger = _dvclive_logger(dir=str(metrics_dir), dvcyaml=False, save_dvc_exp=False, resume=ckpt_path is not None)
    trainer = L.Trainer(
        max_steps=c.max_steps, max_epochs=-1, accelerator=c.accelerator, devices=c.devices,
        strategy=c.strategy, precision=precision, gradient_clip_val=c.grad_clip, deterministic=c.deterministic,
        logger=logger, callbacks=[AtomicLastCheckpoint(last, c.checkpoint_every, record), *(callbacks or [])],
        enable_checkpointing=False, val_check_interval=c.val_every, check_val_every_n_epoch=None,
        # at least one row in a run shorter than log_every: the plots of dvc.yaml read these files
        log_every_n_steps=min(c.log_every, c.max_steps), enable_progress_bar=progress, enable_model_summary=False,
        num_sanity_val_steps=0, use_distributed_sampler=False,  # StepBatches shards by rank itself
    )
    logger.trainer = trainer
    trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt_path)
    if trainer.global_step % c.val_every:  # the loop validated last before the final steps
        trainer.validate(module, val_dl, verbose=False)
    val = dict(trainer.callback_metrics)
    if "val/loss" not in val:
        # resumed a finished run (e.g. `dvc repro -f`): nothing trained, so measure the checkpoint
        # without logging, which would repeat the last step's row in the DVCLive curves
        val = L.Trainer(accelerator=c.accelerator, devices=1, precision=precision, logger=False,
                        enable_progress_bar=False, enable_model_summary=False).validate(module, val_dl, verbose=False)[0]
    metrics = {k: float(v) for k, v in val.items() if k.startswith("val/")}
    metrics["step"] = int(trainer.global_step)
    # how far the run went through its data, whichever of max_steps and epochs set its length
    metrics["train_latents"], metrics["epochs"] = len(train_ds), round(c.max_steps * c.batch_size / len(train_ds), 2)
    if trainer.is_global_zero:
        latents_meta = read_latents_meta(train_path)
        # stats and tokenizer by sha256 and by path as this run had them (a relative one: from its working
        # directory, the repository root under `dvc repro`), so `SpectrogramGenerator.from_pretrained` finds them;
        # the tokenizer's is extract's (None: latents of an older extract)
        save_ema(out_dir / "ema.safetensors", module.ema, {
            "model_name": model.name, "model_config": module.model.config, "users": train_ds.users,
            "latent_multiplier": c.latent_multiplier, "latent_shape": list(train_ds.latent_shape),
            "stats_sha256": record["stats_sha256"], "stats_path": Path(stats_path).as_posix(),
            "step": int(trainer.global_step),
            "tokenizer_sha256": latents_meta.get("tokenizer_sha256", ""),
            "tokenizer_path": latents_meta.get("tokenizer_path"),
        })
    return metrics


def _datasets(c: TrainConfig, train_path, val_path, stats_path) -> tuple[LatentDataset, LatentDataset]:
    stats = load_stats(stats_path)
    # checked here, before the datasets, so that the message names the stats file
    latents_shape = read_latents_meta(train_path)["tensors"].get("latents")
    if latents_shape is not None and stats["mean"].shape[1] != latents_shape[1]:
        raise BadFileError(f"latent stats have {stats['mean'].shape[1]} channels in {stats_path}, but {train_path} has "
                         f"latents of shape {list(latents_shape[1:])} (re-run the `stats` stage)")
    train_ds = LatentDataset(train_path, stats, c.latent_multiplier, c.use_flip)
    val_ds = LatentDataset(val_path, stats, c.latent_multiplier, use_flip=False)
    if train_ds.users != val_ds.users:
        raise BadFileError(f"users differ between {train_path} ({len(train_ds.users)}: {train_ds.users[:5]}...) and "
                         f"{val_path} ({len(val_ds.users)}: {val_ds.users[:5]}...); re-run `extract`")
    return train_ds, val_ds


def _resume_from(c: TrainConfig, last: Path, record: dict, metrics_dir: Path) -> str | None:
    """The checkpoint to continue (`train.resume: auto` and it matches), else None; trims DVCLive to it."""
    if c.resume == "never":
        return None
    if c.resume != "auto":
        raise ParamsError(f"train.resume = {c.resume!r}: expected 'auto' or 'never'")
    ok, why = resume_decision(last, record, c.max_steps, fingerprint)
    log.info("train.resume=auto: %s", why if ok else f"starting fresh: {why}")
    say(f"train: {why}" if ok else f"train: starting fresh ({why})")
    if not ok:
        return None
    if is_rank_zero():
        trim_dvclive_history(metrics_dir, _checkpoint_step(last))
    return str(last)


def _checkpoint_step(path: str | Path) -> int:
    """Optimizer steps done in a Lightning checkpoint."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def _init_from(module: FlowModule, path: str) -> None:
    report = init_weights_from(module.model, path)
    module.ema.load_state_dict(module.model.state_dict())
    skipped = ", ".join(f"{k} ({why})" for k, why in list(report["skipped"].items())[:4])
    say(f"train: initialised {report['loaded']} tensors ({100 * report['loaded_fraction']:.1f} % of the "
          f"parameters) from {path} [{report['source']}]; skipped {len(report['skipped'])}"
          f"{': ' + skipped if skipped else ''}{' ...' if len(report['skipped']) > 4 else ''}; "
          f"{len(report['missing'])} of this model's tensors keep their initialisation")
