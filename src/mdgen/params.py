"""params.yaml: one schema, typed access, errors that name the key.

Defaults live in params.yaml only; this file says what each key must be. A key that
is not in the schema, or a value of the wrong type or range, is an error that names
the key, the value and what was expected -- before any stage writes anything. The same
validation serves other yaml files of the same shape with their own schema (the tokenizer's
training config, `mdgen.tools.tokenizer_train`), and the command-line options that stand in for a key
(`mdgen generate --cfg-scale` for `sample.cfg_scale`): a range is declared once.
"""
from __future__ import annotations

import dataclasses
import math
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
    rng = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
    return Spec(int, lambda v: (lo is None or v >= lo) and (hi is None or v <= hi), "an integer" + rng, optional)


def Float(lo: float | None = None, hi: float | None = None, lo_open=False, hi_open=False, optional=False) -> Spec:
    def ok(v):
        if not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))
    lb = ("(" if lo_open else "[") + (str(lo) if lo is not None else "-inf")
    ub = (str(hi) if hi is not None else "inf") + (")" if hi_open else "]")
    return Spec((int, float), ok, f"a number in {lb}, {ub}", optional)


def Choice(*options: str) -> Spec:
    return Spec(str, lambda v: v in options, "one of " + " | ".join(options))


def Str(optional: bool = False) -> Spec:
    return Spec(str, lambda v: len(v) > 0, "a non-empty string", optional)


def Bool() -> Spec:
    return Spec(bool, None, "true or false")


SCHEMA: dict[str, Spec] = {
    "seed": Int(0),
    "data.dir": Str(),
    "data.image_size": Int(16, 4096),
    "simulate.users": Int(2, 1000),
    "simulate.images_per_user": Int(2, 100000),
    "texture.images": Int(1),
    "texture.reference": Str(optional=True),
    "split.val_fraction": Float(0.0, 1.0, lo_open=True, hi_open=True),
    "split.mode": Choice("blocks", "random"),
    "split.block_size": Int(1),
    "split.gap": Int(0),
    "tokenizer.checkpoint": Str(),
    # the `tokenizer` stage of tokenizer/dvc.yaml (mdgen.stages.tokenizer); model names: mdgen.tokenizer.CONFIGS
    "tokenizer.fit.init": Str(),
    "tokenizer.fit.model": Choice("init", "small-f16d32", "vavae-f16d32"),
    "tokenizer.fit.steps": Int(1),
    "tokenizer.fit.batch_size": Int(1),
    "tokenizer.fit.crop": Int(16),
    "tokenizer.fit.final_crop": Int(16, optional=True),
    "tokenizer.fit.final_steps": Int(0),
    "tokenizer.fit.lr": Float(0.0, 1.0, lo_open=True),
    "tokenizer.fit.min_lr_ratio": Float(0.0, 1.0),
    "tokenizer.fit.warmup_steps": Int(0),
    "tokenizer.fit.weight_decay": Float(0.0),
    "tokenizer.fit.kl_weight": Float(0.0),
    "tokenizer.fit.l1_weight": Float(0.0),
    "tokenizer.fit.l2_weight": Float(0.0),
    "tokenizer.fit.grad_clip": Float(0.0, lo_open=True, optional=True),
    "tokenizer.fit.init_logvar": Float(-30.0, 20.0, optional=True),
    "tokenizer.fit.zero_init_residual": Bool(),
    "tokenizer.fit.device": Choice("auto", "cpu", "cuda"),
    "tokenizer.fit.threads": Int(0, 1024),
    "tokenizer.fit.checkpoint_every": Int(1),
    "tokenizer.fit.resume": Choice("auto", "never"),
    "tokenizer.fit.save_dtype": Choice("float16", "bfloat16", "float32"),
    "extract.batch_size": Int(1),
    "extract.flip": Choice("none", "time", "doppler"),
    "extract.sample_posterior": Bool(),
    "extract.plot_per_user": Int(1, 16),
    "extract.precision": Choice("auto", "fp32", "bf16", "fp16"),
    "stats.reference": Str(optional=True),
    "stats.source": Choice("data", "reference"),
    # the names of mdgen.dit.LightningDiT_configs, spelled out because params.py does not import torch
    # (`mdgen split` validates the whole file); tests/test_params.py checks that they agree
    "model.name": Choice("LightningDiT-XL/1", "LightningDiT-XL/2", "LightningDiT-L/2", "LightningDiT-B/1",
                         "LightningDiT-B/2", "LightningDiT-S/1", "LightningDiT-S/2", "LightningDiT-Tiny/1",
                         "LightningDiT-Tiny/2"),
    "model.class_dropout_prob": Float(0.0, 1.0, hi_open=True),
    "model.use_qknorm": Bool(),
    "train.max_steps": Int(1),
    "train.batch_size": Int(1),
    "train.lr": Float(0.0, 1.0, lo_open=True),
    "train.weight_decay": Float(0.0),
    "train.beta2": Float(0.0, 1.0, hi_open=True),
    "train.warmup_steps": Int(0),
    "train.lr_schedule": Choice("constant", "cosine", "wsd"),
    "train.lr_decay_fraction": Float(0.0, 1.0, lo_open=True),
    "train.grad_clip": Float(0.0, lo_open=True, optional=True),
    "train.ema_decay": Float(0.0, 1.0),
    "train.t_sampling": Choice("logit_normal", "uniform"),
    "train.cos_weight": Float(0.0),
    "train.latent_multiplier": Float(0.0, lo_open=True),
    "train.use_flip": Bool(),
    "train.checkpoint_every": Int(1),
    "train.val_every": Int(1),
    "train.resume": Choice("auto", "never"),
    "train.accelerator": Choice("auto", "cpu", "gpu", "cuda", "mps"),
    "train.devices": Spec((int, str), lambda v: (isinstance(v, int) and v >= 1) or v in ("auto", "-1"),
                          "a positive integer or 'auto'"),
    # only what is tested: fsdp would shard the EMA weights that rank zero saves, ddp_spawn pickles the module
    "train.strategy": Choice("auto", "ddp"),
    "train.precision": Choice("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"),
    "train.compile": Bool(),
    "train.deterministic": Bool(),
    "train.num_workers": Int(0),
    "train.init_from": Str(optional=True),
    "sample.images_per_user": Int(1),
    "sample.steps": Int(1, 10000),
    "sample.method": Choice("euler", "heun", "dopri5"),
    "sample.cfg_scale": Float(0.0),
    "sample.cfg_interval_start": Float(0.0, 1.0),
    "sample.timestep_shift": Float(0.0, lo_open=True),
    "sample.guidance_channels": Choice("all", "first3"),
    "sample.batch_size": Int(1),
    "sample.plot_per_user": Int(1, 16),
    "sample.precision": Choice("auto", "fp32", "bf16", "fp16"),
    "classifier.image_size": Int(16, 1024),
    "classifier.width": Int(1, 512),
    "classifier.steps": Int(1),
    "classifier.batch_size": Int(1),
    "classifier.lr": Float(0.0, 1.0, lo_open=True),
    "classifier.weight_decay": Float(0.0),
    "classifier.augment": Bool(),
    "classifier.threads": Int(0, 1024),
    "evaluate.fewshot_per_user": Int(1),
    "evaluate.fewshot_steps": Int(1),
    "evaluate.seeds": Int(1, 100),
    "evaluate.floor_subsets": Int(1),
    "evaluate.kid_subsets": Int(1),
    "evaluate.kid_subset_size": Int(2),
    "evaluate.precision_recall_k": Int(1),
    "evaluate.density_coverage_k": Int(1),
    "evaluate.memorisation_percentile": Float(0.0, 100.0, lo_open=True, hi_open=True),
    "evaluate.plot_pairs": Int(1, 64),
}


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


def section_keys(section: str) -> list[str]:
    """Every schema key of one params.yaml section, e.g. all `train.*` keys, in schema order."""
    return [k for k in SCHEMA if k.startswith(section + ".")]


def read(keys: list[str], path: str | Path = "params.yaml") -> dict[str, Any]:
    """The validated values of `keys` (a stage reads only what dvc.yaml lists for it)."""
    flat = load_params(path)
    return {k: flat[k] for k in keys}


def keys_for(cls: type, section: str) -> list[str]:
    """The params keys `section.<field>` of a dataclass whose fields are named as the section's keys."""
    return [f"{section}.{f.name}" for f in dataclasses.fields(cls)]


def as_dataclass(cls: type[T], p: dict[str, Any], section: str) -> T:
    """`cls(field=p['section.field'], ...)`: hands a library the values of one section as plain arguments."""
    return cls(**{f.name: p[f"{section}.{f.name}"] for f in dataclasses.fields(cls)})
