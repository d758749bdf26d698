"""A researcher's own folder and the real VA-VAE checkpoint layout, end to end through extract."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mdgen.stages import extract, split
from mdgen.tokenizer import AutoencoderKL, load_tokenizer
from tests.conftest import make_tiny_tokenizer, write_params


def jet_like(rng, h, w):
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def test_real_data_layout_through_split_and_extract(tmp_path):
    """JPEGs named like the real data, one PNG, one other size, RGBA, grayscale and a stray Thumbs.db."""
    rng = np.random.default_rng(0)
    root = tmp_path / "real"
    for u in (1, 2, 10):
        d = root / f"ID_{u}"
        d.mkdir(parents=True)
        for k in range(1, 6):
            Image.fromarray(jet_like(rng, 256, 256)).save(d / f"ID{u}_case1_1_Doppler{k}.jpg", quality=90)
        (d / "Thumbs.db").write_bytes(b"\x00thumbs")
    Image.fromarray(jet_like(rng, 256, 256)).save(root / "ID_1" / "ID1_case1_1_Doppler6.png")
    Image.fromarray(jet_like(rng, 300, 420)).save(root / "ID_2" / "ID2_case1_1_Doppler6.JPG")
    Image.fromarray(rng.integers(0, 255, (256, 256, 4), dtype=np.uint8), "RGBA").save(root / "ID_10" / "ID10_case1_1_Doppler6.png")
    Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8), "L").save(root / "ID_10" / "ID10_case1_1_Doppler7.bmp")

    ckpt = make_tiny_tokenizer(tmp_path / "tok.safetensors")
    params = write_params(tmp_path / "params.yaml", {
        "data": {"dir": str(root), "image_size": 256}, "tokenizer": {"checkpoint": str(ckpt)},
        "split": {"val_fraction": 0.3, "block_size": 2}, "extract": {"batch_size": 4, "plot_per_user": 1}})
    manifest = split.main(str(params), out=str(tmp_path / "split.json"))
    assert manifest["users"] == ["ID_1", "ID_2", "ID_10"]
    listed = {f for part in ("train", "val", "dropped") for fs in manifest[part].values() for f in fs}
    assert len(listed) == 19 and not any("Thumbs" in f for f in listed)

    extract.main(str(params), split_path=str(tmp_path / "split.json"), out_dir=str(tmp_path / "latents"),
                 metrics_path=str(tmp_path / "extract.json"), plot_path=str(tmp_path / "recon.png"), tokenizer_path=str(ckpt))
    tr = load_file(tmp_path / "latents/train.safetensors")
    va = load_file(tmp_path / "latents/val.safetensors")
    assert tr["latents"].shape[1:] == (32, 16, 16)
    assert len(tr["latents"]) == manifest["counts"]["train"] and len(va["latents"]) == manifest["counts"]["val"]
    assert torch.isfinite(tr["latents"]).all()
    assert set(tr["labels"].tolist()) == {0, 1, 2}


def test_corrupt_jpeg_in_own_data_names_the_file(tmp_path):
    root = tmp_path / "real"
    for u in (1, 2):
        (root / f"ID_{u}").mkdir(parents=True)
        for k in (1, 2, 3):
            Image.new("RGB", (256, 256)).save(root / f"ID_{u}" / f"ID{u}_case1_1_Doppler{k}.jpg")
    (root / "ID_2" / "ID2_case1_1_Doppler2.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    params = write_params(tmp_path / "params.yaml", {"data": {"dir": str(root)}})
    with pytest.raises(ValueError, match=r"unreadable image .*ID_2/ID2_case1_1_Doppler2\.jpg"):
        split.main(str(params), out=str(tmp_path / "split.json"))
    assert not (tmp_path / "split.json").exists()


def test_truncated_jpeg_and_empty_png_stop_split_in_one_error(tmp_path, capsys, monkeypatch):
    """A JPEG cut short passed `split` and broke `texture` with a traceback naming no file: now `mdgen split`
    names both bad files in one error, writes nothing, and shows no traceback."""
    from mdgen import cli

    rng = np.random.default_rng(0)
    root = tmp_path / "real"
    for u in (1, 2):
        (root / f"ID_{u}").mkdir(parents=True)
        for k in (1, 2, 3):
            Image.fromarray(jet_like(rng, 64, 64)).save(root / f"ID_{u}" / f"ID{u}_case1_1_Doppler{k}.jpg", quality=90)
    cut = root / "ID_1" / "ID1_case1_1_Doppler2.jpg"
    cut.write_bytes(cut.read_bytes()[:1500])
    (root / "ID_2" / "ID2_case1_1_Doppler4.png").write_bytes(b"")
    params = write_params(tmp_path / "params.yaml", {"data": {"dir": str(root)}})
    monkeypatch.chdir(tmp_path)  # the command writes data/split.json relative to the working directory
    assert cli.main(["split", "--params", str(params)]) == 1 and not (tmp_path / "data").exists()
    err = capsys.readouterr().err
    assert err.startswith(f"mdgen split: error: 2 problems in 2 person folder(s) of {root}") and "Traceback" not in err
    assert f"{cut}: cannot be decoded: image file is truncated" in err
    assert f"{root}/ID_2/ID2_case1_1_Doppler4.png: empty file (0 bytes)" in err


@pytest.mark.slow
def test_full_size_vavae_lightning_pt_loads_and_encodes(tmp_path):
    """A Lightning-style .pt of the real f16d32 layout (random weights) with training-only keys."""
    torch.manual_seed(0)
    model = AutoencoderKL()  # the f16d32 VA-VAE defaults
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["loss.logvar"] = torch.zeros(())
    sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
    sd["foundation_model.model.patch_embed.proj.weight"] = torch.randn(16, 3, 14, 14)
    sd["linear_proj.weight"] = torch.randn(16, 32, 1, 1)
    path = tmp_path / "vavae-imagenet256-f16d32-dinov2.pt"
    torch.save({"state_dict": sd, "global_step": 1, "epoch": 0}, path)
    del sd, model
    tok = load_tokenizer(path)
    assert sum(p.numel() for p in tok.parameters()) == 69_836_067
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        post = tok.encode(x)
    assert post.mean.shape == (1, 32, 16, 16) and torch.isfinite(post.sample(torch.Generator().manual_seed(0))).all()
