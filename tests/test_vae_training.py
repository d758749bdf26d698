"""mdgen.vae_training and `mdgen tokenizer-train` (mdgen.tools.tokenizer_train); the shipped default checkpoint."""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open

from mdgen.tools import tokenizer_train as release
from mdgen.images import load_image, to_tensor, to_uint8
from mdgen.params import ParamsError, TokenizerRecipe, load_params
from mdgen.quality import psnr
from mdgen.simulate import simulate_dataset
from mdgen.tokenizer import AutoencoderKL, load_tokenizer
from mdgen.vae_training import evaluate_tokenizer, linear_codec_psnr, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "pretrained" / "mdgen-vae-f16d32-sim.safetensors"
SHIPPED_CONFIG = REPO / "data" / "pretrained" / "mdgen-vae-f16d32-sim.yaml"

# f2, 4 latent channels: trains in a fraction of a second per step on 32x32 images
TINY = dict(ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[], z_channels=4, embed_dim=4, resolution=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory) -> list[Path]:
    """Eight 32x32 RGB images with smooth random structure (blurred noise through a colour ramp)."""
    root = tmp_path_factory.mktemp("tiny_images")
    rng = np.random.default_rng(0)
    files = []
    for i in range(8):
        field = rng.random((8, 8))
        field = np.kron(field, np.ones((4, 4)))  # blocky 32x32 in [0, 1]
        rgb = np.stack([field, 1 - field, 0.5 * field + 0.25], axis=-1)
        f = root / f"{i}.png"
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(f)
        files.append(f)
    return files


def tiny_recipe(**overrides) -> TokenizerRecipe:
    recipe = dict(steps=40, batch_size=4, crop=16, final_crop=None, final_steps=0, lr=2e-3, min_lr_ratio=0.0,
                  warmup_steps=5, weight_decay=0.0, beta1=0.9, beta2=0.99, kl_weight=1e-6, l1_weight=1.0,
                  l2_weight=0.0, grad_clip=1.0, init_logvar=None, zero_init_residual=False)
    return TokenizerRecipe(**{**recipe, **overrides})


def tiny_train(files, steps=40, seed=0, **overrides):
    return train_tokenizer(files, tiny_recipe(steps=steps, **overrides), seed, model_config=TINY, image_size=32,
                           log_every=10, progress=False)


def test_loss_falls(tiny_images):
    model, history = tiny_train(tiny_images)
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert history[-1]["rec"] < 0.6 * history[0]["rec"], history
    assert history[-1]["psnr"] > history[0]["psnr"] + 3
    assert not model.training and all(not p.is_floating_point() or p.dtype == torch.float32
                                      for p in model.state_dict().values())


def test_same_seed_same_weights(tiny_images):
    a, _ = tiny_train(tiny_images, steps=6, final_crop=32, final_steps=2)
    b, _ = tiny_train(tiny_images, steps=6, final_crop=32, final_steps=2)
    c, _ = tiny_train(tiny_images, steps=6, seed=1, final_crop=32, final_steps=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_bad_crop_is_an_error(tiny_images):
    with pytest.raises(ValueError, match="multiple of the downsampling factor 2"):
        tiny_train(tiny_images, steps=1, crop=15)
    with pytest.raises(ValueError, match="final_crop=32, final_steps=0"):
        tiny_train(tiny_images, steps=1, final_crop=32)


def test_evaluate_reports_dead_channels(tiny_images):
    torch.manual_seed(0)
    model = AutoencoderKL(**TINY).eval()
    with torch.no_grad():
        # channel 2 of the posterior mean (first embed_dim outputs of quant_conv) made constant
        model.quant_conv.weight[2].zero_()
        model.quant_conv.bias[2].fill_(0.3)
    m = evaluate_tokenizer(model, tiny_images, image_size=32, batch_size=3)
    assert m["dead_channels"] == [2]
    assert m["channel_std"][2] == 0.0 and m["channel_std_min"] == 0.0
    assert m["images"] == len(tiny_images) and len(m["channel_std"]) == 4
    for key in ("psnr", "ssim", "psnr_sample", "ssim_sample"):
        assert np.isfinite(m[key])
    healthy = evaluate_tokenizer(AutoencoderKL(**TINY), tiny_images, image_size=32)
    assert healthy["dead_channels"] == []


def test_linear_codec_psnr(tiny_images):
    q = linear_codec_psnr(tiny_images, tiny_images, patch=16, components=(1, 4, 32), image_size=32)
    assert list(q) == [1, 4, 32]
    assert q[1] < q[4] < q[32]
    assert q[32] > 45  # 8 images x 4 patches: 32 components span every training patch exactly (up to rounding)


def write_config(path: Path, **overrides) -> Path:
    tree = yaml.safe_load(SHIPPED_CONFIG.read_text())
    for key, value in overrides.items():
        section, name = key.split(".")
        if value is ...:
            del tree[section][name]
        else:
            tree[section][name] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def test_config_validation(tmp_path):
    config = release.read_config(SHIPPED_CONFIG)
    assert config.model.z_channels == 32 and len(config.model.ch_mult) == 5
    assert config.data.train_seed != 0 and config.data.heldout_seed not in (0, config.data.train_seed)
    with pytest.raises(ParamsError, match="unknown key 'train.learning_rate'"):
        release.read_config(write_config(tmp_path / "a.yaml", **{"train.learning_rate": 1e-3}))
    with pytest.raises(ParamsError, match="missing keys train.kl_weight"):
        release.read_config(write_config(tmp_path / "b.yaml", **{"train.kl_weight": ...}))
    with pytest.raises(ParamsError, match=r"train.lr = True: expected"):
        release.read_config(write_config(tmp_path / "c.yaml", **{"train.lr": True}))
    with pytest.raises(ParamsError, match=r"model.ch_mult = \[1, 0\]"):
        release.read_config(write_config(tmp_path / "d.yaml", **{"model.ch_mult": [1, 0]}))
    with pytest.raises(ParamsError, match="multiple of 32"):
        release.read_config(write_config(tmp_path / "f.yaml", **{"model.ch": 48}))
    (tmp_path / "e.yaml").write_text(SHIPPED_CONFIG.read_text() + "\noptim: {lr: 1}\n")
    with pytest.raises(ParamsError, match="unknown section 'optim'"):
        release.read_config(tmp_path / "e.yaml")
    (tmp_path / "g.yaml").write_text(SHIPPED_CONFIG.read_text().replace("\nsave:\n", "\nsave: 3\nunused:\n"))
    with pytest.raises(ParamsError, match=r"g.yaml: save = 3: expected a mapping of its keys \(save.dtype\)"):
        release.read_config(tmp_path / "g.yaml")


def test_config_is_checked_by_the_params_validator(tmp_path):
    # the same code as params.yaml's, with the tokenizer's schema: the error names file, key, value, expectation
    bad = write_config(tmp_path / "bad.yaml", **{"train.lr": 2.0})
    with pytest.raises(ParamsError, match=r"bad.yaml: train.lr = 2.0: expected a number in \(0.0, 1.0\]"):
        release.read_config(bad)
    typo = write_config(tmp_path / "typo.yaml", **{"model.channels": 32})
    with pytest.raises(ParamsError, match=r"typo.yaml: unknown key 'model.channels' \(known keys: model.ch, "):
        release.read_config(typo)
    with pytest.raises(ParamsError, match=r"unknown key 'model.ch'"):  # params.yaml's schema does not know it
        load_params(SHIPPED_CONFIG)
    optional = write_config(tmp_path / "optional.yaml", **{"train.grad_clip": None, "train.init_logvar": None})
    assert release.read_config(optional).train.grad_clip is None


def test_model_card_template(monkeypatch):
    """The card rendered from templates/tokenizer_card.md, against the text of the f-string it replaced."""
    monkeypatch.setattr(torch, "__version__", "TORCH")
    config = dataclasses.asdict(release.read_config(SHIPPED_CONFIG))
    metrics = {"psnr": 16.123456, "psnr_min": 14.5, "ssim": 0.51234, "psnr_sample": 15.9, "ssim_sample": 0.49,
               "channel_std_min": 0.1234, "channel_std_mean": 0.3, "channel_std_max": 0.9, "dead_channels": [3, 7],
               "posterior_std_mean": 0.05, "channel_mean_abs_max": 0.777, "images": 64,
               "linear_codec_psnr": {32: 17.1, 64: 18.25, 128: 20.0, 256: 23.456}}
    history = [{"step": 50 * (i + 1), "crop": 64, "lr": 2e-3 / (i + 1), "rec": 0.1 / (i + 1), "kl": 300.0 + i,
                "psnr": 12.0 + i} for i in range(30)]
    info = {"file_mb": 9.87, "dtype": "float16", "params": 2345678, "config_file": "`mdgen-vae.yaml`",
            "radar": "prf_hz 8000.0, duration_s 2.3", "machine": "x86_64 CPU", "threads": 1, "total_seconds": 1234.5,
            "train_seconds": 1000.0, "images_per_s": 12.345}
    card = release.model_card("mdgen-vae", config, metrics, history, info)
    assert card == (REPO / "tests" / "fixtures" / "tokenizer_card_expected.md").read_text(encoding="utf-8")
    config["train"].update(l2_weight=0.0, final_steps=0, final_crop=None)
    card = release.model_card("mdgen-vae", config, {**metrics, "dead_channels": []}, history[:1], info)
    assert "\nL1 reconstruction of posterior samples" in card and "the last" not in card
    assert "dead\nchannels (std ≤ 1 % of the mean): none." in card


def test_release_writes_checkpoint_and_card(tmp_path, monkeypatch):
    # serial simulation: for six images, starting worker processes costs more than it saves (same bytes)
    monkeypatch.setattr(release, "simulate_dataset", functools.partial(simulate_dataset, workers=1))
    cfg = write_config(tmp_path / "tiny-vae.yaml", **{
        "model.ch_mult": [1, 1, 1, 1, 1], "model.num_res_blocks": 1, "model.z_channels": 8, "model.embed_dim": 8,
        "data.train_users": 2, "data.train_images_per_user": 1, "data.heldout_users": 1,
        "data.heldout_images_per_user": 1, "train.steps": 3, "train.batch_size": 2, "train.crop": 32,
        "train.final_crop": 64, "train.final_steps": 1, "train.warmup_steps": 1, "train.log_every": 1})
    result = release.main(params_path=str(cfg), work_dir=str(tmp_path), progress=False)
    out = tmp_path / "tiny-vae.safetensors"
    assert result["checkpoint"] == str(out) and result["steps"] == 3
    model = load_tokenizer(out)
    assert model.config["z_channels"] == 8
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        assert f.get_tensor("encoder.conv_in.weight").dtype == torch.float16
    assert json.loads(meta["mdgen_training"])["train"]["steps"] == 3
    assert set(json.loads(meta["mdgen_metrics"])) >= {"psnr", "ssim", "psnr_sample", "dead_channels"}
    card = (tmp_path / "tiny-vae.md").read_text()
    assert "# tiny-vae" in card and "PSNR" in card
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mdgen-tokenizer-")] == []  # temp data removed


def test_shipped_checkpoint(tmp_path):
    assert SHIPPED.is_file(), f"{SHIPPED} is missing: run `mdgen tokenizer-train`"
    assert SHIPPED.stat().st_size <= 10 * 2**20
    model = load_tokenizer(SHIPPED)
    assert model.config["z_channels"] == model.config["embed_dim"] == 32 and model.downsample_factor == 16
    # a user and image the tokenizer never saw: seed 7 is neither training's nor held-out's
    simulate_dataset(tmp_path / "sim", 1, 1, seed=7, progress=False, workers=1)
    image = load_image(tmp_path / "sim" / "ID_1" / "1.png")
    with torch.no_grad():
        post = model.encode(to_tensor(image))
        assert post.mean.shape == (1, 32, 16, 16)
        recon = to_uint8(model.decode(post.mode()))
    # Regression floor for the file in the repo (held-out 19.43 dB mean, 18.16 min on its model card's
    # images), below the 22 dB target of issue 18 it does not reach; an early checkpoint scores ~16 dB.
    assert psnr(image[None], recon)[0] >= 18.5
