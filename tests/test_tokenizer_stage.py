"""The `tokenizer` stage on a tiny folder: with steps 0 it hands tokenizer.checkpoint on unchanged; otherwise it fits on
the train split only, fine-tunes or trains from scratch, resumes or starts over as its params say; `extract` switches
tokenizers by params alone."""
from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mdgen import vae_training
from mdgen.images import load_images
from mdgen.io import file_sha256
from mdgen.split import files_and_labels, make_split
from mdgen.stages import extract
from mdgen.stages import tokenizer as stage
from mdgen.params import SCHEMA
from mdgen.tokenizer import CONFIGS, SAVE_DTYPES, AutoencoderKL, load_tokenizer, prepared_tokenizer, tokenizer_file
from tests.conftest import make_image_folder, make_tiny_tokenizer, split_config, write_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 6 steps of 2 crops of 32 px, the last 2 on whole 64 px images; a resume file every 2 steps; one thread, as
# every tiny test (params.yaml's 2 are for a real fit)
FIT = {"steps": 6, "batch_size": 2, "crop": 32, "final_crop": 64, "final_steps": 2, "warmup_steps": 1,
       "checkpoint_every": 2, "threads": 1}


@pytest.fixture
def ws(tmp_path):
    data = make_image_folder(tmp_path / "data", users=2, per_user=6)
    (tmp_path / "split.json").write_text(json.dumps(make_split(data, split_config(0.34, mode="random"), 0)))
    return tmp_path, data, make_tiny_tokenizer(tmp_path / "tiny.safetensors")


def params_file(ws, tag: str = "a", checkpoint=None, **fit):
    root, data, init = ws
    return write_params(root / f"params_{tag}.yaml", {
        "data": {"dir": str(data), "image_size": 64},
        "tokenizer": {"checkpoint": str(checkpoint or init), "fit": {**FIT, **fit}}})


def fit(ws, params, out: str = "tok") -> dict:
    root = ws[0]
    return stage.main(str(params), split_path=str(root / "split.json"), out_dir=str(root / out),
                      metrics_path=str(root / f"{out}.json"))


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


class CountSteps:
    """Wraps vae_training.reconstruction_loss: counts the steps trained, and can kill the run at one."""

    def __init__(self, monkeypatch, kill_at: int | None = None):
        self.calls, self.kill_at, self.inner = 0, kill_at, vae_training.reconstruction_loss
        monkeypatch.setattr(vae_training, "reconstruction_loss", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.kill_at:
            raise KeyboardInterrupt("killed")
        return self.inner(*args, **kwargs)


def test_fits_on_the_train_split_only(ws):
    root, data, init = ws
    manifest = json.loads((root / "split.json").read_text())
    val, _ = files_and_labels(manifest, "val")
    train, _ = files_and_labels(manifest, "train")
    assert val and train
    for f in val:  # a stage that opened any val image would fail on it
        f.write_bytes(b"not an image")
    with pytest.raises(Exception):
        load_images(val[:1], 64)
    m = fit(ws, params_file(ws))
    assert m["train_images"] == len(train) and m["steps"] == FIT["steps"] and m["start"] == "init"
    assert m["init_sha256"] == file_sha256(init)
    fitted = root / "tok" / "tokenizer.safetensors"
    model = load_tokenizer(fitted)
    assert model.config == load_tokenizer(init).config
    before, after = weights(init), weights(fitted)
    assert any(not torch.allclose(before[k], after[k].float()) for k in before), "fine-tuning changed nothing"
    with safe_open(str(fitted), "pt") as f:
        meta = json.loads(f.metadata()["mdgen_fit"])
    assert meta["params"]["steps"] == FIT["steps"] and meta["train_images"] == len(train)
    card = (root / "tok" / "README.md").read_text()
    assert f"{len(train)} images" in card and "val images were never read" in card
    assert "on random 32-px crops on the latent grid, the last 2 steps on whole images." in card
    assert json.loads((root / "tok.json").read_text()) == m


def test_a_killed_fit_resumes_to_the_same_weights(ws, monkeypatch, caplog):
    fit(ws, params_file(ws), out="whole")
    counter = CountSteps(monkeypatch, kill_at=5)  # dies in step 5: steps 1-4 are in resume.pt
    with pytest.raises(KeyboardInterrupt):
        fit(ws, params_file(ws), out="killed")
    assert not (ws[0] / "killed" / "tokenizer.safetensors").exists()
    assert torch.load(ws[0] / ".killed.resume.pt", weights_only=True)["step"] == 4
    counter = CountSteps(monkeypatch)
    with caplog.at_level(logging.INFO, logger="mdgen.vae_training"):
        fit(ws, params_file(ws), out="killed")
    assert counter.calls == 2 and "at step 4 of 6" in caplog.text
    whole, resumed = weights(ws[0] / "whole" / "tokenizer.safetensors"), weights(ws[0] / "killed" / "tokenizer.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_resume_never_and_a_changed_recipe_start_over(ws, monkeypatch):
    fit(ws, params_file(ws))
    counter = CountSteps(monkeypatch)
    fit(ws, params_file(ws))                              # finished and unchanged: nothing left to train
    assert counter.calls == 0
    fit(ws, params_file(ws, "never", resume="never"))     # told to start over
    assert counter.calls == FIT["steps"]
    fit(ws, params_file(ws, "lr", lr=0.002))              # another recipe: its resume file does not apply
    assert counter.calls == 2 * FIT["steps"]


def test_from_scratch_with_a_named_architecture(ws):
    m = fit(ws, params_file(ws, "scratch", model="small-f16d32", steps=2, final_steps=1, checkpoint_every=1))
    assert m["start"] == "small-f16d32" and m["init"] is None and m["init_sha256"] is None
    model = load_tokenizer(ws[0] / "tok" / "tokenizer.safetensors")
    assert {k: model.config[k] for k in CONFIGS["small-f16d32"]} == CONFIGS["small-f16d32"]
    assert model.config["resolution"] == 64


def test_bad_fit_params_name_what_is_wrong(ws):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        fit(ws, params_file(ws, "missing", checkpoint=ws[0] / "missing.safetensors"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="tokenizer.fit.device = 'cuda'"):
            fit(ws, params_file(ws, "cuda", device="cuda"))
    with pytest.raises(ValueError, match="final_steps=7"):
        fit(ws, params_file(ws, "final", final_steps=7))
    assert not (ws[0] / "tok").exists()


def test_steps_0_names_the_checkpoint_and_copies_nothing(ws):
    root, _, init = ws
    m = fit(ws, params_file(ws, steps=0))
    assert m["start"] == "as-is" and m["checkpoint_sha256"] == file_sha256(init)
    assert sorted(p.name for p in (root / "tok").iterdir()) == ["README.md", "tokenizer.json"]
    assert prepared_tokenizer(root / "tok") == init and tokenizer_file(root / "tok") == init
    assert "not fitted to this data" in (root / "tok" / "README.md").read_text()
    # the checkpoint edited since: refused until the stage runs again
    init.write_bytes(init.read_bytes() + b" ")
    with pytest.raises(ValueError, match="changed since the `tokenizer` stage recorded it"):
        prepared_tokenizer(root / "tok")


def test_a_fitted_tokenizer_replaces_the_named_one_and_back(ws):
    root = ws[0]
    fit(ws, params_file(ws))
    assert prepared_tokenizer(root / "tok") == root / "tok" / "tokenizer.safetensors"
    fit(ws, params_file(ws, steps=0))  # back to the checkpoint as it is: the fitted file goes
    assert prepared_tokenizer(root / "tok") == ws[2] and not (root / "tok" / "tokenizer.safetensors").exists()


def test_extract_switches_between_shipped_fitted_and_full_size_vavae_by_params(ws):
    root = ws[0]
    full = root / "vavae-imagenet256-f16d32-dinov2.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": AutoencoderKL().state_dict()}, full)  # the released layout, random weights
    latents = {}
    for name, ckpt, steps in (("shipped", ws[2], 0), ("fitted", ws[2], FIT["steps"]), ("vavae", full, 0)):
        fit(ws, params_file(ws, name, checkpoint=ckpt, steps=steps), out=f"tok_{name}")
        prepared = prepared_tokenizer(root / f"tok_{name}")
        params = write_params(root / f"params_x_{name}.yaml", {
            "data": {"dir": str(ws[1]), "image_size": 64}, "extract": {"batch_size": 4, "plot_per_user": 1}})
        out = root / f"latents_{name}"
        extract.main(str(params), split_path=str(root / "split.json"), out_dir=str(out),
                     tokenizer_path=str(root / f"tok_{name}"),
                     metrics_path=str(root / f"extract_{name}.json"), plot_path=str(root / f"recon_{name}.png"))
        with safe_open(str(out / "train.safetensors"), "pt") as f:
            assert f.metadata()["tokenizer_sha256"] == file_sha256(prepared)
            latents[name] = f.get_tensor("latents")
        assert latents[name].shape[1:] == (32, 4, 4)
    assert not torch.equal(latents["shipped"], latents["fitted"])
    assert not torch.equal(latents["shipped"], latents["vavae"])


def test_fine_tunes_a_full_size_vavae_pt(ws):
    """The GPU profile's path on a CPU: the released VA-VAE's .pt layout (random weights), one step on one image."""
    root = ws[0]
    full = root / "vavae-imagenet256-f16d32-dinov2.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": AutoencoderKL().state_dict()}, full)
    m = fit(ws, params_file(ws, "vavae", checkpoint=full, steps=1, batch_size=1, crop=64, final_crop=None,
                            final_steps=0, save_dtype="bfloat16"))
    assert m["start"] == "init" and 69 < m["params_m"] < 71
    model = load_tokenizer(root / "tok" / "tokenizer.safetensors")
    assert {k: model.config[k] for k in CONFIGS["vavae-f16d32"]} == CONFIGS["vavae-f16d32"]


def test_docs_profiles_are_valid_params(tmp_path):
    """The CPU and GPU profiles of docs/own-data.md, as `dvc exp run -S` applies them, pass the params schema."""
    from tests.test_workflows import doc_section, set_params_of, validated

    section = doc_section("docs/own-data.md", "Fitting the tokenizer to your data")
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [c for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip().startswith("dvc exp run")]
    assert len(commands) == 2, commands  # the CPU profile, the GPU profile
    cpu, gpu = (validated(tmp_path, set_params_of(c)) for c in commands)
    assert cpu["tokenizer.fit.steps"] == 1500 and cpu["tokenizer.checkpoint"].endswith("mdgen-vae-f16d32-sim.safetensors")
    assert cpu["tokenizer.fit.model"] == gpu["tokenizer.fit.model"] == "init"
    assert gpu["tokenizer.fit.device"] == "cuda" and gpu["tokenizer.checkpoint"].endswith("dinov2.pt")
    assert gpu["tokenizer.fit.steps"] > 0
    variant = re.search(r"The same GPU profile with (.*?) trains", section, flags=re.S).group(1)
    scratch = validated(tmp_path, set_params_of(commands[1]) + re.findall(r"-S ([a-z_.]+=[^\s`]+)", variant))
    assert scratch["tokenizer.fit.model"] == "vavae-f16d32" and scratch["tokenizer.fit.final_steps"] > 0


def test_params_schema_names_the_registries():
    """params.py does not import torch, so it spells the names of tokenizer.CONFIGS and SAVE_DTYPES out."""
    def names(key: str) -> set[str]:
        return set(SCHEMA[key].expect.removeprefix("one of ").split(" | "))

    assert names("tokenizer.fit.model") == {"init", *CONFIGS}
    assert names("tokenizer.fit.save_dtype") == set(SAVE_DTYPES)
