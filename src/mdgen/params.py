"""params.yaml: each section a frozen dataclass that is its schema; typed access; errors that name the key.

One declaration per setting: a field below carries the key's type check, range and one-line meaning
(`setting(...)`); params.yaml holds the values, and nothing here has a default for a key. `load` reads a
whole file into `Params` (every key required, any other an error that names the file, the key, the value
and what was expected, before any stage writes anything); a stage takes what dvc.yaml lists for it with
`read(keys)`: a whole section comes as its object (`p["train"].lr`), a single key as its value. Library code
takes a section object, never the file. The same machinery serves other YAML files with a root class of
their own (`mdgen tokenizer-train`'s config) and the command-line options that stand in for a key
(`mdgen generate --cfg-scale` for `sample.cfg_scale`): a range is declared once.

Dataclasses rather than pydantic (installed with DVC): the checks are strict without configuration (a bool
is not an integer, "0.1" is not a number), the messages keep their file/key/value/expectation form, and
`mdgen split`, which validates the whole file, does not import pydantic (0.28 s here).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from mdgen.errors import ParamsError  # also mdgen.params.ParamsError, where stages and tests import it


T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    kind: type | tuple[type, ...]
    check: Callable[[Any], bool] | None = None
    expect: str = ""
    optional: bool = False  # the key may hold null


def Int(lo: int | None = None, hi: int | None = None, optional: bool = False) -> Spec:
    rng = f" in {'[' if lo is not None else '('}{lo if lo is not None else '-inf'}, " \
          f"{hi if hi is not None else 'inf'}{']' if hi is not None else ')'}"
    return Spec(int, lambda v: (lo is None or v >= lo) and (hi is None or v <= hi), "an integer" + rng, optional)


def Float(lo: float | None = None, hi: float | None = None, lo_open=False, hi_open=False, optional=False) -> Spec:
    def ok(v):
        if not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))
    lb = ("(" if lo_open or lo is None else "[") + (str(lo) if lo is not None else "-inf")
    ub = (str(hi) if hi is not None else "inf") + (")" if hi_open or hi is None else "]")
    return Spec((int, float), ok, f"a number in {lb}, {ub}", optional)


def Choice(*options: str) -> Spec:
    return Spec(str, lambda v: v in options, "one of " + " | ".join(options))


def Str(optional: bool = False) -> Spec:
    return Spec(str, lambda v: len(v) > 0, "a non-empty string", optional)


def Bool() -> Spec:
    return Spec(bool, None, "true or false")


def IntList(lo: int = 1, empty: bool = False) -> Spec:
    return Spec(list, lambda v: (empty or len(v) > 0) and all(isinstance(x, int) and not isinstance(x, bool) and x >= lo
                                                              for x in v),
                f"a {'' if empty else 'non-empty '}list of integers >= {lo}")


def setting(spec: Spec, meaning: str) -> Any:
    """A key of the file: its check and its meaning. No default: the file holds the value."""
    return dataclasses.field(metadata={"spec": spec, "meaning": meaning})


# ----------------------------------------------------------------------------- params.yaml's sections

@dataclass(frozen=True)
class AxesConfig:
    v_top_mps: float = setting(Float(-100.0, 100.0), "Doppler velocity (m/s, positive towards the radar) at the top "
                                                    "edge of images without the simulator's users.json (your own); "
                                                    "simulated data records its own axes")
    v_bottom_mps: float = setting(Float(-100.0, 100.0), "the same at the bottom edge")
    duration_s: float = setting(Float(0.0, lo_open=True), "seconds from the first column to the last of those images")

    def __post_init__(self):
        if self.v_top_mps == self.v_bottom_mps:
            raise ParamsError(f"data.axes.v_top_mps = data.axes.v_bottom_mps = {self.v_top_mps}: expected the "
                              "velocities of the top and bottom edges of your images, which differ")


@dataclass(frozen=True)
class DataConfig:
    dir: str = setting(Str(), "the images: one sub-folder per person (ID_1 ... ID_31)")
    image_size: int = setting(Int(16, 4096), "side of the square images every stage works on (others are resized "
                                             "and centre-cropped, `split` says how many and what is lost)")
    axes: AxesConfig


@dataclass(frozen=True)
class SimulateConfig:
    users: int = setting(Int(2, 1000), "simulated persons")
    images_per_user: int = setting(Int(2, 100000), "spectrograms simulated per person")


@dataclass(frozen=True)
class TextureConfig:
    images: int = setting(Int(1), "images the texture card of data.dir is computed on (a seeded draw)")
    reference: str | None = setting(Str(optional=True), "texture card of a real set to measure distances to; "
                                                        "null: figures only")
    shape_reference: str | None = setting(Str(optional=True), "shape card of a real set (where the energy sits "
                                                              "around the torso line) to measure distances to; "
                                                              "null: figures only")


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = setting(Float(0.0, 1.0, lo_open=True, hi_open=True), "share of each person's images in val")
    mode: str = setting(Choice("blocks", "random"), "blocks: consecutive windows of a recording never straddle "
                                                     "train/val; random: a plain shuffle")
    block_size: int = setting(Int(1), "files per contiguous block moved to val as a unit")
    gap: int = setting(Int(0), "files dropped from train on each side of a val block")


@dataclass(frozen=True)
class TokenizerRecipe:
    """How a tokenizer is trained or fine-tuned: what `vae_training.train_tokenizer` takes, besides the data and
    the seed. Shared by params.yaml's `tokenizer.fit` and `mdgen tokenizer-train`'s `train` section."""
    steps: int = setting(Int(1), "optimiser steps")
    batch_size: int = setting(Int(1), "images (or crops) per step")
    crop: int = setting(Int(16), "training window side: whole images, or crops on the latent grid")
    final_crop: int | None = setting(Int(16, optional=True), "window side of an optional last phase (batch scaled "
                                                             "to about the same pixels per step); null: none")
    final_steps: int = setting(Int(0), "steps of that last phase (0 with final_crop null)")
    lr: float = setting(Float(0.0, 1.0, lo_open=True), "AdamW peak learning rate, after warm-up, cosine to "
                                                        "lr * min_lr_ratio")
    min_lr_ratio: float = setting(Float(0.0, 1.0), "where the cosine ends, as a share of lr")
    warmup_steps: int = setting(Int(0), "linear warm-up steps")
    weight_decay: float = setting(Float(0.0), "AdamW weight decay")
    beta1: float = setting(Float(0.0, 1.0, hi_open=True), "AdamW beta1")
    beta2: float = setting(Float(0.0, 1.0, hi_open=True), "AdamW beta2")
    kl_weight: float = setting(Float(0.0), "KL weight, LDM's convention (sums per image, as the VA-VAE)")
    l1_weight: float = setting(Float(0.0), "weight of |x - x_hat| (images in [-1, 1])")
    l2_weight: float = setting(Float(0.0), "weight of (x - x_hat)^2: PSNR is an MSE, L2 on top of L1")
    grad_clip: float | None = setting(Float(0.0, lo_open=True, optional=True), "gradient-norm clip; null: none")
    init_logvar: float | None = setting(Float(-30.0, 20.0, optional=True), "from scratch only: start value of the "
                                                                           "posterior log-variance; null: torch's init")
    zero_init_residual: bool = setting(Bool(), "from scratch only: residual branches start at zero")


@dataclass(frozen=True)
class TokenizerFitConfig(TokenizerRecipe):
    """How the `tokenizer` stage fits tokenizer.checkpoint to the train split of data.dir (steps 0: it does not)."""
    steps: int = setting(Int(0), "optimiser steps; 0: extract and sample use tokenizer.checkpoint as it is")
    # the names of mdgen.tokenizer.CONFIGS (tests/test_tokenizer.py checks them): params.py does not import torch
    model: str = setting(Choice("init", "small-f16d32", "vavae-f16d32"),
                         "init: fine-tune tokenizer.checkpoint; a name: train that architecture from scratch")
    device: str = setting(Choice("auto", "cpu", "cuda"), "auto: the first GPU if there is one, else the CPU")
    threads: int = setting(Int(0, 1024), "CPU threads (0: torch's default); the weights depend on it bitwise")
    checkpoint_every: int = setting(Int(1), "steps between resume files (models/.tokenizer.resume.pt)")
    resume: str = setting(Choice("auto", "never"), "auto: continue resume.pt if recipe, train files and starting "
                                                   "weights match; never: start over")
    save_dtype: str = setting(Choice("float16", "bfloat16", "float32"), "dtype of fitted weights on disk")


@dataclass(frozen=True)
class TokenizerConfig:
    checkpoint: str = setting(Str(), "the tokenizer to start from: the shipped one, or the released VA-VAE .pt; "
                                     "`tokenizer` prepares (or fits) it into models/tokenizer/, which extract "
                                     "and sample use")
    fit: TokenizerFitConfig


@dataclass(frozen=True)
class ExtractConfig:
    batch_size: int = setting(Int(1), "images per encoder batch")
    flip: str = setting(Choice("none", "time", "doppler"), "also store flipped latents (time: horizontal; doppler: "
                                                          "vertical = reversed walking direction)")
    sample_posterior: bool = setting(Bool(), "encode with posterior.sample() as upstream; false: the mean")
    plot_per_user: int = setting(Int(1, 16), "reconstructions drawn per person")
    precision: str = setting(Choice("auto", "fp32", "bf16", "fp16"), "auto: bf16 on CUDA cards of compute "
                                                                    "capability >= 8.0, fp16 on older, fp32 on CPUs")


@dataclass(frozen=True)
class StatsConfig:
    reference: str | None = setting(Str(optional=True), "a published latents_stats.pt (e.g. the VA-VAE's ImageNet "
                                                        "one); null: none")
    source: str = setting(Choice("data", "reference"), "which statistics training normalises with")


@dataclass(frozen=True)
class ModelConfig:
    # the names of mdgen.dit.LightningDiT_configs (tests/test_params.py checks them): params.py does not import torch
    name: str = setting(Choice("LightningDiT-XL/1", "LightningDiT-XL/2", "LightningDiT-L/2", "LightningDiT-B/1",
                               "LightningDiT-B/2", "LightningDiT-S/1", "LightningDiT-S/2", "LightningDiT-Tiny/1",
                               "LightningDiT-Tiny/2"), "a size of the registry in mdgen.dit")
    class_dropout_prob: float = setting(Float(0.0, 1.0, hi_open=True), "label dropout that trains the "
                                                                       "unconditional model for CFG")
    use_qknorm: bool = setting(Bool(), "RMS-normalise queries and keys (off in upstream's shipped configs)")
    # the names of mdgen.dit.ATTENTION
    attention: str = setting(Choice("auto", "fused", "plain"), "attention kernel: fused (scaled_dot_product_attention, "
                                                              "upstream's), plain (the product written out), auto "
                                                              "(plain on a CPU, fused elsewhere)")
    # not in params.yaml: constructor arguments over the preset, for tests and notebooks that shrink a size
    overrides: dict = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int | None = setting(Int(1, optional=True), "optimiser steps, whatever the data; null: train.epochs "
                                                           "decides, from the size of the train set")
    epochs: float | None = setting(Float(0.0, lo_open=True, optional=True),
                                   "where max_steps is null: passes over the train latents, max_steps = ceil(epochs "
                                   "x train latents / batch_size), so the length follows the data")
    batch_size: int = setting(Int(1), "latents per step (per device)")
    lr: float = setting(Float(0.0, 1.0, lo_open=True), "AdamW peak learning rate")
    weight_decay: float = setting(Float(0.0), "AdamW weight decay")
    beta2: float = setting(Float(0.0, 1.0, hi_open=True), "AdamW beta2 (beta1 is 0.9)")
    warmup_steps: int = setting(Int(0), "linear warm-up steps")
    lr_schedule: str = setting(Choice("constant", "cosine", "wsd"), "constant | cosine (to zero at max_steps) | "
                                                                    "wsd (hold, then linear to zero)")
    lr_decay_fraction: float = setting(Float(0.0, 1.0, lo_open=True), "wsd: share of the steps spent decaying")
    grad_clip: float | None = setting(Float(0.0, lo_open=True, optional=True), "gradient-norm clip; null: none")
    ema_decay: float = setting(Float(0.0, 1.0), "EMA weights' decay per step (horizon ~ 1 / (1 - decay) steps)")
    t_sampling: str = setting(Choice("logit_normal", "uniform"), "how flow times are drawn")
    cos_weight: float = setting(Float(0.0), "weight of upstream's cosine (direction) loss beside the MSE")
    latent_multiplier: float = setting(Float(0.0, lo_open=True), "normalised latents are scaled by this")
    use_flip: bool = setting(Bool(), "take latents_flip with p = 0.5 when extract.flip wrote it")
    checkpoint_every: int = setting(Int(1), "steps between models/dit/last.ckpt: a killed run loses at most these")
    val_every: int = setting(Int(1), "steps between validations")
    resume: str = setting(Choice("auto", "never"), "auto: continue models/dit/last.ckpt if its configuration "
                                                   "matches; never: start over")
    accelerator: str = setting(Choice("auto", "cpu", "gpu", "cuda", "mps"), "Lightning's accelerator")
    devices: int | str = setting(Spec((int, str), lambda v: (isinstance(v, int) and v >= 1) or v in ("auto", "-1"),
                                      "a positive integer or 'auto'"), "Lightning's devices")
    # only what is tested: fsdp would shard the EMA weights that rank zero saves, ddp_spawn pickles the module
    strategy: str = setting(Choice("auto", "ddp"), "auto | ddp (devices > 1: one process per device)")
    precision: str = setting(Choice("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"),
                             "auto: bf16-mixed where bf16 is native (GPUs of compute capability >= 8.0, CPUs with "
                             "AVX512-BF16/AMX), 16-mixed on older GPUs, else 32-true")
    compile: bool = setting(Bool(), "torch.compile the model (falls back to eager if the compiler fails)")
    deterministic: bool = setting(Bool(), "deterministic kernels: reruns and resumes byte-identical")
    num_workers: int = setting(Int(0), "DataLoader worker processes")
    init_from: str | None = setting(Str(optional=True), "an upstream LightningDiT checkpoint to start from (what "
                                                        "does not fit is skipped and reported); null: random init")
    # not in params.yaml: upstream's values, and how often the curves get a row
    t_mean: float = 0.0
    t_std: float = 1.0
    val_t: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    log_every: int = 10

    def __post_init__(self):
        if self.init_from is not None:  # a Path would not load back from last.ckpt with weights_only
            object.__setattr__(self, "init_from", str(self.init_from))
        if self.max_steps is None and self.epochs is None:
            raise ParamsError("train.max_steps and train.epochs are both null: expected the run's length in one of "
                              "them (epochs: passes over the train set, so that it follows the data)")

    def steps_for(self, train_latents: int) -> int:
        """Optimiser steps of a run on `train_latents` latents: max_steps where set, else epochs' worth of
        batches (one device's batch: on several devices each step sees several, and the same epochs go further)."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * train_latents / self.batch_size))

    @property
    def betas(self) -> tuple[float, float]:
        return (0.9, self.beta2)


@dataclass(frozen=True)
class SampleConfig:
    images_per_user: int = setting(Int(1), "samples per person")
    steps: int = setting(Int(1, 10000), "solver steps (euler: one model evaluation each, heun: two)")
    method: str = setting(Choice("euler", "heun"), "ODE solver")
    cfg_scale: float = setting(Float(0.0), "classifier-free guidance scale (1: none)")
    cfg_interval_start: float = setting(Float(0.0, 1.0), "no guidance while t < start (t = 0 is noise)")
    timestep_shift: float = setting(Float(0.0, lo_open=True), "upstream's grid bend t' = s t / (1 + (s - 1) t); "
                                                              "1: uniform")
    guidance_channels: str = setting(Choice("all", "first3"), "all | first3 (upstream's DiT-inherited quirk)")
    batch_size: int = setting(Int(1), "images per model batch")
    plot_per_user: int = setting(Int(1, 16), "samples drawn per person in plots/samples.png")
    precision: str = setting(Choice("auto", "fp32", "bf16", "fp16"), "auto: bf16 where native (GPUs of compute "
                             "capability >= 8.0, CPUs with AVX512-BF16/AMX), fp16 on older GPUs, else fp32")

    def nfe(self) -> float:
        """Model evaluations per image at guided steps (CFG counts both halves)."""
        return float(self.steps * {"euler": 1, "heun": 2}[self.method] * (2 if self.cfg_scale != 1.0 else 1))


@dataclass(frozen=True)
class ClassifierConfig:
    """The judge of `evaluate` (a ResNet-18-style CNN trained on the real train split only); its recipe also
    trains the train-on-synthetic and the few-shot classifiers."""
    image_size: int = setting(Int(16, 1024), "inputs resized to this square")
    width: int = setting(Int(1, 512), "first-stage channels (stages w, 2w, 4w, 8w; features 8w)")
    steps: int = setting(Int(1), "optimiser steps (not epochs: equal compute whatever the set size)")
    batch_size: int = setting(Int(1), "images per step")
    lr: float = setting(Float(0.0, 1.0, lo_open=True), "AdamW peak; 5 % warm-up, cosine to zero")
    weight_decay: float = setting(Float(0.0), "AdamW weight decay")
    augment: bool = setting(Bool(), "random time shifts (gait phase); never along Doppler, which is identity")
    threads: int = setting(Int(0, 1024), "CPU threads for classifier and evaluate (0: torch's default)")
    precision: str = setting(Choice("auto", "fp32", "bf16"),
                             "training arithmetic: auto = bf16 autocast where the CPU has it natively (AVX512-BF16, "
                             "AMX), else fp32; scoring and features are always fp32")


@dataclass(frozen=True)
class SiftConfig:
    """Which samples `sift` keeps for training classifiers (mdgen.sift); the quality figures of `evaluate`
    always score every sample."""
    method: str = setting(Choice("none", "judge", "kinematics", "both"),
                          "none: keep all | judge: the judge names the requested person | kinematics: gait within "
                          "max_z of the person's real train images | both")
    min_prob: float = setting(Float(0.0, 1.0), "judge test: the requested person's least probability "
                                               "(on top of being the judge's first choice)")
    max_z: float = setting(Float(0.0, lo_open=True), "kinematics test: the most standard deviations of the person's "
                                                     "real train gait, in every measure")


@dataclass(frozen=True)
class EvaluateConfig:
    fewshot_per_user: int = setting(Int(1), "real train images per person in the augmentation-gain experiment")
    fewshot_steps: int = setting(Int(1), "classifier steps of each few-shot run (both arms alike)")
    seeds: int = setting(Int(1, 100), "few-shot draws and trainings (seed, seed + 1, ...)")
    full_seeds: int = setting(Int(0, 100), "trainings of the full arm (every real train image, the judge's "
                                           "steps; 0: no full arm)")
    workers: int = setting(Int(1, 256), "processes that train the augmentation classifiers side by side (each on "
                                        "classifier.threads threads; same figures whatever the count), here and "
                                        "in the `classifier` stage, which trains the real-only ones with the judge")
    real_share: float | None = setting(Float(0.0, 1.0, hi_open=True, optional=True),
                                       "share of real images in the augmented classifiers' batches, by "
                                       "repeating them (null: every image once)")
    floor_subsets: int = setting(Int(1), "disjoint real train subsets of the samples' size the FID floor is "
                                         "averaged over")
    kid_subsets: int = setting(Int(1), "KID subsets")
    kid_subset_size: int = setting(Int(2), "images per KID subset (smaller than the sample set, so subsets differ)")
    precision_recall_k: int = setting(Int(1), "k of the k-NN radii of precision/recall (Kynkaanniemi et al. 2019)")
    density_coverage_k: int = setting(Int(1), "k of density/coverage (Naeem et al. 2020)")
    memorisation_percentile: float = setting(Float(0.0, 100.0, lo_open=True, hi_open=True),
                                             "a sample is memorised when nearer to train than this percentile of "
                                             "real val")
    plot_pairs: int = setting(Int(1, 64), "closest generated/train pairs drawn")


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml."""
    # numpy's and Lightning's seeding take 32 bits
    seed: int = setting(Int(0, 2**32 - 1), "every random draw of the pipeline follows it")
    data: DataConfig
    simulate: SimulateConfig
    texture: TextureConfig
    split: SplitConfig
    tokenizer: TokenizerConfig
    extract: ExtractConfig
    stats: StatsConfig
    model: ModelConfig
    train: TrainConfig
    sample: SampleConfig
    classifier: ClassifierConfig
    sift: SiftConfig
    evaluate: EvaluateConfig


# ----------------------------------------------------------------------------- schema from the classes

def _sections(cls: type) -> dict[str, type]:
    """The fields of `cls` that are sections (dataclass-typed), by name."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if "spec" not in f.metadata and dataclasses.is_dataclass(hints[f.name])}


def schema(root: type, prefix: str = "") -> dict[str, Spec]:
    """{'section.key': Spec} of every setting under the dataclass `root`, in declaration order."""
    out: dict[str, Spec] = {}
    sections = _sections(root)
    for f in dataclasses.fields(root):
        if "spec" in f.metadata:
            out[prefix + f.name] = f.metadata["spec"]
        elif f.name in sections:
            out.update(schema(sections[f.name], f"{prefix}{f.name}."))
    return out


def meanings(root: type = None, prefix: str = "") -> dict[str, str]:
    """{'section.key': one-line meaning} of every setting under `root` (default: params.yaml's)."""
    root = root or Params
    out: dict[str, str] = {}
    sections = _sections(root)
    for f in dataclasses.fields(root):
        if "spec" in f.metadata:
            out[prefix + f.name] = f.metadata["meaning"]
        elif f.name in sections:
            out.update(meanings(sections[f.name], f"{prefix}{f.name}."))
    return out


def build(cls: type[T], flat: dict[str, Any], prefix: str = "") -> T:
    """An instance of the dataclass `cls` from validated flat values ('section.key' -> value)."""
    sections = _sections(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if "spec" in f.metadata:
            kwargs[f.name] = flat[prefix + f.name]
        elif f.name in sections:
            kwargs[f.name] = build(sections[f.name], flat, f"{prefix}{f.name}.")
    return cls(**kwargs)


SCHEMA: dict[str, Spec] = schema(Params)


def _flatten(tree: dict, prefix: str = "", schema: dict[str, Spec] = SCHEMA) -> dict[str, Any]:
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and any(s.startswith(key + ".") for s in schema):
            flat.update(_flatten(v, key + ".", schema))
        else:
            flat[key] = v
    return flat


def _unknown_key(key: str, value: Any, source: str, schema: dict[str, Spec]) -> ParamsError:
    sections = sorted({k.split(".")[0] for k in schema if "." in k})
    section = key.split(".")[0]
    if key == section and section in sections:  # e.g. `train: 3` where a mapping of train.* keys belongs
        return ParamsError(f"{source}: {key} = {value!r}: expected a mapping of its keys "
                           f"({', '.join(k for k in schema if k.startswith(key + '.'))})")
    if key == section and isinstance(value, dict):
        return ParamsError(f"{source}: unknown section '{key}' (expected {', '.join(sections)})")
    known = [k for k in schema if k.startswith(section + ".")] or list(schema)
    return ParamsError(f"{source}: unknown key '{key}' (known keys: {', '.join(known)})")


def validate(key: str, value: Any, source: str = "params.yaml", schema: dict[str, Spec] = SCHEMA,
             option: str | None = None) -> Any:
    """`value` of `key` checked against `schema` (default: params.yaml's); numbers of float keys come back as float.

    `option`: the command-line option that overrides `key` (`--cfg-scale` for `sample.cfg_scale`), checked
    as the key is and named in the message instead of the file and key.
    """
    if key not in schema:
        raise _unknown_key(key, value, source, schema)
    spec = schema[key]
    if value is None and spec.optional:
        return None
    # bool is an int subclass in Python; `lr: true` must not pass as 1
    if isinstance(value, bool) and spec.kind is not bool:
        ok = False
    else:
        ok = isinstance(value, spec.kind) and (spec.check is None or spec.check(value))
    if not ok:
        named = option or f"{source}: {key}"
        raise ParamsError(f"{named} = {value!r}: expected {spec.expect}")
    return float(value) if spec.kind == (int, float) else value


def read_yaml(path: Path) -> Any:
    """The parsed YAML of an existing file (empty file: {}); a syntax error is a ParamsError naming the file.

    Read as DVC reads params.yaml (`dvc.utils.serialize.parse_yaml`: ruamel.yaml, safe, YAML 1.2), so
    that a stage sees the values DVC hashes: `lr: 1e-3` is a number to both (PyYAML's YAML 1.1 takes
    it for a string), `on`/`yes` are strings to both, and a key given twice is an error, not the last.
    """
    try:
        return YAML(typ="safe").load(path.read_text()) or {}
    except MarkedYAMLError as e:  # its message spans several lines and quotes the text; keep what and where
        where = f" (line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1})" if e.problem_mark else ""
        raise ParamsError(f"{path}: not valid YAML: {e.problem or e.context}{where}") from None
    except YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def load_params(path: str | Path = "params.yaml", schema: dict[str, Spec] = SCHEMA) -> dict[str, Any]:
    """Read and validate a whole file against `schema`; returns a flat {'section.key': value} dict in file order.

    Every key of the schema is required, any other key is an error; the default schema is params.yaml's.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found (run from the repository root or pass --params)")
    tree = read_yaml(path)
    if not isinstance(tree, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    flat = {k: validate(k, v, str(path), schema) for k, v in _flatten(tree, schema=schema).items()}
    missing = [k for k in schema if k not in flat]
    if missing:
        raise ParamsError(f"{path}: missing keys {', '.join(missing)}")
    return flat


def load(path: str | Path = "params.yaml", root: type[T] = Params) -> T:
    """A whole file, validated, as its root dataclass (default: params.yaml as `Params`)."""
    return build(root, load_params(path, schema(root)))


def read(keys: list[str], path: str | Path = "params.yaml") -> dict[str, Any]:
    """What a stage reads, exactly as dvc.yaml lists it for the stage: a section name (`train`, `tokenizer.fit`)
    gives the section's object, a key (`data.image_size`) its value. The whole file is validated."""
    flat = load_params(path)
    out = {}
    for key in keys:
        if key in SCHEMA:
            out[key] = flat[key]
            continue
        node: Any = Params
        for part in key.split("."):
            node = _sections(node).get(part) if dataclasses.is_dataclass(node) else None
        if node is None:
            raise ParamsError(f"{key!r} is neither a key nor a section of params.yaml")
        out[key] = build(node, flat, key + ".")
    return out


def describe(path: str | Path = "params.yaml", section: str | None = None) -> str:
    """`mdgen params`: every key (of one section) with its value in `path`, what it takes and what it means."""
    flat = load_params(path)
    rows = [(key, repr(flat[key]), SCHEMA[key].expect + (" or null" if SCHEMA[key].optional else ""), meaning)
            for key, meaning in meanings().items() if section is None or key.startswith(section + ".")
            or key == section]
    if not rows:
        raise ParamsError(f"{path}: no section or key {section!r} (sections: "
                          f"{', '.join(sorted({k.split('.')[0] for k in SCHEMA}))})")
    width = max(len(k) + len(v) for k, v, _, _ in rows) + 3
    return "\n".join(f"{f'{k} = {v}':<{width}} {meaning} ({expect})" for k, v, expect, meaning in rows)
