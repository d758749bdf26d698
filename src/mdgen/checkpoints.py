"""Checkpoint and weight files of the DiT: what `train` writes and what sampling and export read.

- `last.ckpt` (Lightning's, written by `mdgen.dit_training`): `resume_decision` says whether a run may
  continue it; `export_upstream` turns it into upstream LightningDiT's `{'model', 'ema'}` .pt.
- `ema.safetensors`: the EMA weights with their model config, users, and the path and sha256 of the latent
  statistics and the tokenizer in the metadata (`save_ema`, `read_ema_meta`, `load_ema`), all that `sample`,
  `mdgen generate` and `SpectrogramGenerator.from_pretrained` need.
- Upstream `.pt` files: `read_dit_state` and `init_weights_from` for `train.init_from`.

No Lightning import here, so reading a model for sampling does not pay for it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from mdgen import resume
from mdgen.dit import LightningDiT
from mdgen.errors import BadFileError, MissingFileError, OutputPathError, ParamsError
from mdgen.io import (RESTORE_HINT, atomic_path, check_folder_name, check_output_path, load_torch_file, read_safetensors,
                      save_safetensors)


# ----------------------------------------------------------------------------- resume

def resume_decision(ckpt_path: str | Path, record: dict, max_steps: int,
                    fingerprint: Callable[[dict], dict]) -> tuple[bool, str]:
    """(resume?, why) for `train.resume: auto`: resume only a run whose record matches (`mdgen.resume`).

    `record` is what this run would store under `last.ckpt`'s "mdgen" key; `fingerprint` maps a record
    to the part that must be equal for the run to continue (the rest, such as how often it saves, may
    change between a run and its resume).
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        return False, f"no checkpoint at {ckpt_path}"
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 -- a torn or foreign file must not stop a fresh run
        return False, f"{ckpt_path} is unreadable ({type(e).__name__}: {e})"
    saved = ckpt.get("mdgen") if isinstance(ckpt, dict) else None
    try:
        saved = fingerprint(saved) if isinstance(saved, dict) else "none"
    except KeyError:  # the record of an older mdgen: it cannot be compared
        saved = "none"
    ok, why = resume.decide(saved, fingerprint(record), str(ckpt_path))
    if not ok:
        return ok, why
    step = int(ckpt.get("global_step", 0))
    if step > max_steps:
        return False, f"{ckpt_path} is at step {step}, beyond max_steps {max_steps}"
    return True, f"resuming from {ckpt_path} at step {step}"


# ----------------------------------------------------------------------------- EMA weights

def save_ema(path: str | Path, ema: torch.nn.Module, metadata: dict) -> None:
    """EMA weights with upstream LightningDiT key names; every metadata value is JSON-encoded."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in ema.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    save_safetensors(state, path, meta)


def read_ema_meta(path: str | Path) -> dict:
    """Metadata of an `ema.safetensors` (model name/config, users, `stats_path`/`stats_sha256`,
    `tokenizer_path`/`tokenizer_sha256`, ...), without loading weights. The paths are as the training run had
    them (relative ones: to its working directory); a model trained before mdgen recorded them has only the
    sha256s (`SpectrogramGenerator.from_pretrained` then says what to pass)."""
    if not Path(path).is_file():
        raise MissingFileError(f"{path} not found (run the `train` stage first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:  # a cut-off copy fails here, before any weight is read
        raise BadFileError(f"cannot read {path}: truncated or corrupt ({e}); {RESTORE_HINT}") from None
    if "model_config" not in raw or "model_name" not in raw:
        raise BadFileError(f"{path}: no model_name/model_config metadata (expected ema.safetensors from `mdgen train`)")
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError as e:
        raise BadFileError(f"{path}: metadata is not the JSON `mdgen train` writes ({e}); {RESTORE_HINT}") from None
    for user in meta.get("users", []):  # they become folder names of samples
        check_folder_name(user, str(path))
    return meta


def load_ema(path: str | Path, device: str | torch.device = "cpu") -> tuple[LightningDiT, dict]:
    """Rebuild the model from `ema.safetensors` (config from its metadata) and load it strictly."""
    meta = read_ema_meta(path)
    try:
        model = LightningDiT(**meta["model_config"])
    except (TypeError, AssertionError) as e:
        raise BadFileError(f"{path}: model_config {meta['model_config']} does not build a LightningDiT ({e})") from None
    try:  # read_ema_meta has checked that the file is as long as its header says
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:  # torch lists every missing/unexpected key and shape, one per line
        raise BadFileError(f"{path}: its weights do not fit its model_config "
                           f"({' '.join(str(e).split())}); {RESTORE_HINT}") from None
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
        raise MissingFileError(f"DiT checkpoint {path} " + ("is a folder, not a checkpoint file" if path.is_dir()
                                                            else "does not exist"))
    if path.suffix == ".safetensors":
        return _unwrap_keys(read_safetensors(path, "DiT checkpoint")[1]), "safetensors"
    obj = load_torch_file(path, "DiT checkpoint")
    if not isinstance(obj, dict):
        raise BadFileError(f"{path}: expected a dict, got {type(obj).__name__}")
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
    raise BadFileError(f"{path}: no DiT weights found: expected one of the keys {list(prefer)} (upstream), "
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
        raise ParamsError(f"train.init_from = {path}: none of its {len(state)} tensors fits this model "
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
    `out_path` is checked before the (possibly large) checkpoint is read: not a folder, not beneath a
    file, not the checkpoint itself.
    """
    check_output_path(out_path)
    if Path(out_path).resolve() == Path(ckpt_path).resolve():
        raise OutputPathError(f"{out_path} is the training checkpoint being exported; writing there would replace it "
                              "(choose another output file, e.g. models/upstream.pt)")
    ckpt = load_torch_file(ckpt_path, "training checkpoint")
    sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise BadFileError(f"{ckpt_path}: not a Lightning checkpoint of `mdgen train` (no 'state_dict')")
    out = {}
    for part in ("model", "ema"):
        out[part] = {k: v.detach().float().contiguous().clone() for k, v in _lightning_part(sd, part).items()}
        if not out[part]:
            raise BadFileError(f"{ckpt_path}: no '{part}.*' weights (expected a checkpoint of `mdgen train`)")
    record = ckpt.get("mdgen") or {}
    out["config"] = {"model_name": record.get("config", {}).get("model_name"),
                     "model_kwargs": record.get("model_kwargs"), "users": record.get("users")}
    out["step"] = int(ckpt.get("global_step", 0))
    with atomic_path(out_path) as tmp:
        torch.save(out, tmp)
    return {"path": str(out_path), "tensors": len(out["ema"]), "step": out["step"]}
