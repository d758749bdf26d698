"""From a trained `models/dit/` to spectrogram images of a given person.

`SpectrogramGenerator.from_pretrained("models/dit")` is the Python API (docs/python-api.md): the EMA
LightningDiT, the latent statistics and the frozen tokenizer it was trained with (found by the paths `train`
recorded in `ema.safetensors`, checked by sha256), and the run's `params.yaml` (`sample` section, `seed`) as
the defaults of `generate(person, n)`, which returns uint8 RGB images. `load(...)` takes the three files by
hand. `images(...)` samples latents for a person, de-normalises and decodes them, and times both: what
`generate`, the `sample` stage and `write_samples` (a whole set, resumably) run. `mdgen generate` is
`from_pretrained` + `generate`.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from mdgen import params, resume
from mdgen.accel import autocast_dtype
from mdgen.checkpoints import load_ema, read_ema_meta
from mdgen.errors import BadFileError, MissingFileError, ParamsError
from mdgen.images import save_png, to_uint8
from mdgen.io import atomic_path, check_output_path, file_sha256, remove_stale_temps, write_json
from mdgen.latents import denormalize, load_stats
from mdgen.ode import sample_latents
from mdgen.params import SampleConfig
from mdgen.tokenizer import load_tokenizer


# generate()'s arguments -> the params.yaml key each is checked as (same type and range: a NaN guidance scale
# would sample black images without an error); `mdgen generate` checks its options with them too
OPTIONS = {"n": "sample.images_per_user", "seed": "seed", "steps": "sample.steps", "cfg_scale": "sample.cfg_scale"}


def check_option(name: str, value, option: str | None = None):
    """`value` of generate()'s argument `name` checked as its params.yaml twin (`OPTIONS`), as that key's value
    comes back (`mdgen.params.validate`); `option` is the name in the message (`--cfg-scale`), default `name`."""
    return params.validate(OPTIONS[name], value, option=option or name)


def user_index(users: list[str], user: str) -> int:
    """Label of `user`: its position in the users the model was trained on.

    Those are plain folder names (`read_ema_meta` checks), so a `user` that passes cannot be a path.
    """
    if user not in users:
        raise ParamsError(f"unknown user {user!r}; valid users: {', '.join(users)}")
    return users.index(user)


@dataclass
class SpectrogramGenerator:
    model: torch.nn.Module
    tokenizer: torch.nn.Module
    stats: dict[str, torch.Tensor]
    users: list[str]
    latent_multiplier: float
    device: torch.device
    sources: dict  # sha256 of the EMA weights, stats and tokenizer files: what the images depend on
    # generate()'s defaults: the run's `sample` section and seed (from_pretrained reads them from params.yaml)
    sample: SampleConfig | None = None
    seed: int | None = None

    @staticmethod
    def check_user(ema_path: str | Path, user: str) -> None:
        """Fail fast, before any weights load, on a user the model was not trained on (`mdgen generate --user`)."""
        user_index(read_ema_meta(ema_path)["users"], user)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path = "models/dit", *, root: str | Path | None = None,
                        params_path: str | Path | None = None, stats: str | Path | None = None,
                        tokenizer: str | Path | None = None, device: str | torch.device | None = None,
                        allow_other_tokenizer: bool = False) -> "SpectrogramGenerator":
        """The model in `model_dir` with the latent statistics and the tokenizer it was trained with, and the
        sampling options of the run as `generate`'s defaults.

        `root` is the folder the run worked in (default: the current one; the repository root under `dvc
        repro`): `model_dir`, the stats and tokenizer paths that `train` recorded in `ema.safetensors`, and the
        default `params_path`, `root/params.yaml` (its `seed`, `data.image_size` and `sample` section), are
        relative to it. `stats` and `tokenizer` replace the recorded files (paths as given); their sha256 must
        still be the recorded ones, the tokenizer's unless `allow_other_tokenizer` (see `load`). The device is
        the `sample` stage's: `device`, default the first CUDA GPU if there is one, else the CPU; the precision
        is the `sample` section's (`auto`: bf16 where native, fp16 on older GPUs, else fp32).
        """
        root = Path() if root is None else Path(root)
        ema = root / model_dir / "ema.safetensors"
        params_path = root / "params.yaml" if params_path is None else Path(params_path)
        # relative paths from the wrong folder (a notebook in a subfolder of the repository) fail here, not later
        where = (f"looked from {Path.cwd()}: paths are relative to the folder `train` ran in, the repository root; "
                 "from elsewhere pass root=, e.g. root='..' from notebooks/")
        if not ema.is_file():
            raise MissingFileError(f"{ema} not found ({where}; or run `dvc repro`, or `dvc pull`, first)")
        if not params_path.is_file():
            raise MissingFileError(f"{params_path} not found ({where}; or pass params_path=, "
                                   "`mdgen generate --params`)")
        meta = read_ema_meta(ema)
        given = {"stats_path": stats, "tokenizer_path": tokenizer}
        missing = [key for key, path in given.items() if path is None and not meta.get(key)]
        if missing:  # a model of an older mdgen, or trained on latents of an older `extract`
            raise BadFileError(f"{ema} records no {' and no '.join(missing)} (trained before mdgen recorded them); "
                               "pass the files it was trained with: SpectrogramGenerator.from_pretrained(model_dir, "
                               "stats=..., tokenizer=...), SpectrogramGenerator.load(ema_path, stats_path, "
                               "tokenizer_path) or `mdgen generate --stats ... --tokenizer ...`; or re-run `train`")
        paths = {key: Path(path) if path is not None else root / meta[key] for key, path in given.items()}
        p = params.read(["seed", "data.image_size", "sample"], params_path)
        return cls.load(ema, paths["stats_path"], paths["tokenizer_path"], device=device,
                        allow_other_tokenizer=allow_other_tokenizer, image_size=p["data.image_size"],
                        sample=p["sample"], seed=p["seed"])

    @classmethod
    def load(cls, ema_path: str | Path, stats_path: str | Path, tokenizer_path: str | Path,
             device: str | torch.device | None = None, allow_other_tokenizer: bool = False,
             image_size: int | None = None, *, sample: SampleConfig | None = None,
             seed: int | None = None) -> "SpectrogramGenerator":
        """The EMA model, its stats and the tokenizer its latents came from (checked by sha256: latents
        decoded by another tokenizer are noise, unless `allow_other_tokenizer` says that is intended,
        e.g. a fine-tuned copy of the same tokenizer).

        Any tokenizer must fit the model, `allow_other_tokenizer` or not: decode the model's latent
        channels and, given `image_size` (data.image_size), turn its latent grid into images of that size.
        `sample` and `seed` are `generate`'s defaults (without them, only `images` samples).
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, meta = load_ema(ema_path, device)
        stats = load_stats(stats_path, channels=model.in_channels)
        stats_sha = file_sha256(stats_path)
        if meta.get("stats_sha256") and meta["stats_sha256"] != stats_sha:
            raise BadFileError(f"{stats_path} is not the latent statistics {ema_path} was trained with "
                               "(sha256 differs); re-run `train` or restore the matching stats")
        if not Path(tokenizer_path).is_file():  # checked here, as its sha256 is read before load_tokenizer
            raise MissingFileError(f"tokenizer checkpoint {tokenizer_path} does not exist (the tokenizer {ema_path} "
                                   "was trained with: re-create it with `dvc repro`, or pass its path)")
        trained_with, tokenizer_sha = meta.get("tokenizer_sha256"), file_sha256(tokenizer_path)
        if trained_with and not allow_other_tokenizer and trained_with != tokenizer_sha:
            raise BadFileError(f"tokenizer {tokenizer_path} is not the one whose latents {ema_path} was trained on "
                               f"(sha256 {tokenizer_sha[:12]}..., the model's latents came from "
                               f"{trained_with[:12]}...); use that file, or pass allow_other_tokenizer=True "
                               "(`mdgen generate --allow-other-tokenizer`) if decoding with another one is intended")
        tokenizer = load_tokenizer(tokenizer_path, device=device)
        # another latent width fails in the decoder's first conv; another downsampling factor decodes,
        # silently, to another image size (an f8 tokenizer makes 128 px images of 16x16 latents, not 256)
        channels, grid = model.in_channels, model.config["input_size"]
        embed_dim, factor = tokenizer.config["embed_dim"], tokenizer.downsample_factor
        if embed_dim != channels or (image_size is not None and grid * factor != image_size):
            wanted = "" if image_size is None else f", data.image_size is {image_size}"
            raise BadFileError(f"tokenizer {tokenizer_path} does not fit {ema_path}: the model makes "
                               f"{channels}x{grid}x{grid} latents, the tokenizer decodes {embed_dim}-channel ones "
                               f"{factor}x up ({grid}x{grid} -> {grid * factor}x{grid * factor} images{wanted}); "
                               + (f"this is the tokenizer the model was trained with, so data.image_size is what "
                                  f"changed: set it back to {grid * factor}"
                                  if embed_dim == channels and trained_with == tokenizer_sha else
                                  "use the tokenizer the model was trained with (tokenizer.checkpoint)"))
        sources = {"ema_sha256": file_sha256(ema_path), "stats_sha256": stats_sha,
                   "tokenizer_sha256": tokenizer_sha}
        return cls(model, tokenizer, stats, list(meta["users"]), float(meta.get("latent_multiplier", 1.0)), device,
                   sources, sample, seed)

    def label(self, user: str) -> int:
        return user_index(self.users, user)

    def options(self, *, seed: int | None = None, steps: int | None = None,
                cfg_scale: float | None = None) -> tuple[SampleConfig, int]:
        """(sample section, seed) that `generate` samples with: the defaults with these overrides, each checked
        as its params.yaml twin (`check_option`)."""
        if self.sample is None or self.seed is None:
            raise ParamsError("this generator has no sampling defaults (made by `load` without sample= and seed=): "
                              "use SpectrogramGenerator.from_pretrained, or pass them to `load`")
        changed = {k: check_option(k, v) for k, v in (("steps", steps), ("cfg_scale", cfg_scale)) if v is not None}
        return replace(self.sample, **changed), self.seed if seed is None else check_option("seed", seed)

    def generate(self, user: str, n: int = 16, *, seed: int | None = None, steps: int | None = None,
                 cfg_scale: float | None = None) -> np.ndarray:
        """n images of `user` (a person the model was trained on, e.g. ID_3: `self.users`) as one uint8 array
        [n, H, W, 3], RGB, H = W = data.image_size; `to_pil` turns it into PIL images.

        Sampled as the `sample` stage samples: its section and seed (those of the run's params.yaml, see
        `from_pretrained`), less what `seed`, `steps` and `cfg_scale` override (checked as their params.yaml
        twins). The noise depends only on (seed, user): the same call gives the same images, and with n =
        sample.images_per_user they are the stage's images of that person (on the same device).
        """
        n = check_option("n", n)
        config, seed = self.options(seed=seed, steps=steps, cfg_scale=cfg_scale)
        images, _ = self.images(user, n, config, seed)
        return images

    @staticmethod
    def to_pil(images: np.ndarray) -> list[Image.Image]:
        """PIL RGB images of `generate`'s uint8 [n, H, W, 3] array, one per image (`im.save("x.png")`)."""
        return [Image.fromarray(im) for im in images]

    @torch.no_grad()
    def images(self, user: str, n: int, config: SampleConfig, seed: int) -> tuple[np.ndarray, dict]:
        """n uint8 images [n, H, W, 3] of `user` sampled as the `sample` section says, and timings. The noise
        depends only on (seed, user).

        The DiT runs under config.precision (`mdgen.accel.autocast_dtype`: `auto` is bf16 where native, fp16 on
        older GPUs, else fp32); the tokenizer decodes in it too, except fp16, which its activations can overflow.
        """
        label = self.label(user)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + label)
        decode_amp = autocast_dtype(self.device, config.precision, fp16_safe=False)
        batch_size = config.batch_size
        t0 = time.perf_counter()
        z = sample_latents(self.model, torch.full((n,), label, dtype=torch.long), config, generator=gen)
        t1 = time.perf_counter()
        z = denormalize(z.float(), self.stats, self.latent_multiplier)
        out = []
        for start in range(0, n, batch_size):
            with torch.autocast(self.device.type, dtype=decode_amp, enabled=decode_amp is not None):
                x = self.tokenizer.decode(z[start:start + batch_size])
            out.append(to_uint8(x.float().cpu()))
        t2 = time.perf_counter()
        return np.concatenate(out), {"sample_s": t1 - t0, "decode_s": t2 - t1}


def write_samples(gen: SpectrogramGenerator, out_dir: str | Path, config: SampleConfig, seed: int,
                  progress: bool = True) -> dict:
    """config.images_per_user PNGs per person into `out_dir/<person>/`, resumably; returns timings and the
    persons kept.

    Persons are written one by one into `.<out_dir>.partial/` beside `out_dir`, each folder atomically,
    with a fingerprint of everything the images depend on (weights, stats, tokenizer, the sample section,
    seed). A run killed after 25 of 31 persons leaves 25 finished folders there, and a rerun with the same
    fingerprint samples only the other 6 (another fingerprint starts afresh and says why: `mdgen.resume`).
    `out_dir` appears only when every person is written, so DVC never takes a partial set for the stage's
    output. The caller holds `out_dir`'s writer lock (`mdgen.io.exclusive_writer`): temp folders in the
    partial set are then a killed run's, and are removed.
    """
    out_dir = Path(out_dir)
    check_output_path(out_dir, folder=True)
    n = config.images_per_user
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    # plot_per_user draws, it does not change an image
    fingerprint = {**gen.sources, "users": gen.users, "seed": seed,
                   "sample": {k: v for k, v in asdict(config).items() if k != "plot_per_user"}}
    record = partial / "fingerprint.json"
    if partial.exists():
        saved = json.loads(record.read_text()) if record.is_file() else None
        ok, why = resume.decide(saved, fingerprint, str(partial))
        if not ok:
            print(f"sample: starting afresh: {why}")
            shutil.rmtree(partial)
    # what a killed run left half-written (a person's temp folder) must never reach out_dir
    remove_stale_temps(partial)
    write_json(record, fingerprint)
    kept = [u for u in gen.users if (partial / u).is_dir()]
    timing = {"sample_s": 0.0, "decode_s": 0.0}
    bar = tqdm(total=n * len(gen.users), initial=n * len(kept), desc="sample", unit="img", disable=not progress)
    if kept:
        bar.write(f"sample: {len(kept)} of {len(gen.users)} persons kept from an interrupted run ({partial})")
    with bar:
        for i, user in enumerate(gen.users):
            if user not in kept:
                imgs, t = gen.images(user, n, config, seed)
                with atomic_path(partial / user, folder=True) as tmp:
                    for k, im in enumerate(imgs):
                        save_png(tmp / f"{k:05d}.png", im)
                timing = {k: timing[k] + t[k] for k in timing}
                bar.update(n)
            bar.set_postfix(persons=f"{i + 1}/{len(gen.users)}")
    record.unlink()
    if out_dir.is_dir():
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    return {**timing, "kept_users": len(kept), "generated_images": n * (len(gen.users) - len(kept))}
