"""extract and stats stages on a tiny folder with a tiny random tokenizer."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mdgen.images import load_images
from mdgen.latents import compute_stats, encode_files, image_batches, load_stats, reconstruct
from mdgen.params import ExtractConfig
from mdgen.split import files_and_labels
from mdgen.tokenizer import load_tokenizer
from mdgen.split import make_split
from mdgen.stages import extract, stats
from tests.conftest import make_image_folder, make_tiny_tokenizer, split_config, write_params


@pytest.fixture
def workspace(tmp_path):
    data = make_image_folder(tmp_path / "data", users=2, per_user=4)
    (tmp_path / "split.json").write_text(json.dumps(make_split(data, split_config(0.25, mode="random"), 0)))
    ckpt = make_tiny_tokenizer(tmp_path / "tok.safetensors")
    return tmp_path, ckpt


def run_extract(ws, ckpt, flip="none", sample_posterior=True, tag="a"):
    params = write_params(ws / f"params_{tag}.yaml", {
        "data": {"image_size": 64}, "tokenizer": {"checkpoint": str(ckpt)},
        "extract": {"batch_size": 3, "flip": flip, "sample_posterior": sample_posterior, "plot_per_user": 1}})
    out = ws / f"latents_{tag}"
    m = extract.main(str(params), split_path=str(ws / "split.json"), out_dir=str(out),
                     metrics_path=str(ws / f"extract_{tag}.json"), plot_path=str(ws / f"recon_{tag}.png"),
                     tokenizer_path=str(ckpt))
    return out, m


def test_extract_writes_upstream_keys_shapes_and_metadata(workspace):
    ws, ckpt = workspace
    out, m = run_extract(ws, ckpt, flip="doppler")
    train = load_file(out / "train.safetensors")
    assert set(train) == {"latents", "latents_flip", "labels"}
    assert train["latents"].dtype == torch.float32 and train["labels"].dtype == torch.int64
    assert train["latents"].shape == (6, 32, 4, 4) and train["latents_flip"].shape == (6, 32, 4, 4)
    assert train["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    with safe_open(str(out / "val.safetensors"), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("latents").shape == (2, 32, 4, 4)
    assert json.loads(meta["users"]) == ["ID_1", "ID_2"]
    assert meta["image_size"] == "64" and meta["sample_posterior"] == "true" and len(meta["tokenizer_sha256"]) == 64
    assert not torch.equal(train["latents"], train["latents_flip"])
    assert m["latent_shape"] == [32, 4, 4] and "val_psnr_db" in m and 0 < m["val_ssim"] <= 1
    assert (ws / "recon_a.png").stat().st_size > 0


def test_no_flip_means_no_flip_key_and_mean_mode_is_posterior_mean(workspace):
    ws, ckpt = workspace
    out_s, _ = run_extract(ws, ckpt, tag="s")
    out_m, _ = run_extract(ws, ckpt, sample_posterior=False, tag="m")
    s, m = load_file(out_s / "train.safetensors"), load_file(out_m / "train.safetensors")
    assert "latents_flip" not in s
    assert not torch.equal(s["latents"], m["latents"])
    # posterior std is small but non-zero: samples scatter around the mean
    assert (s["latents"] - m["latents"]).abs().mean() < 5 * m["latents"].std()


def test_extract_and_stats_are_byte_identical_across_runs(workspace):
    ws, ckpt = workspace
    out_a, _ = run_extract(ws, ckpt, tag="a")
    out_b, _ = run_extract(ws, ckpt, tag="b")
    for part in ("train", "val"):
        assert (out_a / f"{part}.safetensors").read_bytes() == (out_b / f"{part}.safetensors").read_bytes()
    params = write_params(ws / "p_stats.yaml", {})
    for tag, out in (("a", out_a), ("b", out_b)):
        stats.main(str(params), latents_path=str(out / "train.safetensors"), out=str(out / "latents_stats.pt"),
                   metrics_path=str(ws / f"stats_{tag}.json"))
    assert (out_a / "latents_stats.pt").read_bytes() == (out_b / "latents_stats.pt").read_bytes()
    st = load_stats(out_a / "latents_stats.pt", channels=32)
    assert st["mean"].shape == (1, 32, 1, 1) and st["std"].dtype == torch.float32
    raw = torch.load(out_a / "latents_stats.pt", weights_only=True)
    assert set(raw) == {"mean", "std"}


def test_reconstruct_from_kept_means_is_reconstruct_from_files(workspace):
    """`extract` decodes the val means its encoding kept instead of encoding the images again: the same
    reconstructions, bitwise, with the posterior sampled for the latents and the flip on."""
    ws, ckpt = workspace
    model = load_tokenizer(ckpt)
    files, _ = files_and_labels(json.loads((ws / "split.json").read_text()), "train")
    config = ExtractConfig(batch_size=4, flip="time", sample_posterior=True, plot_per_user=1, precision="auto")
    out = encode_files(model, files, config, image_size=64, seed=0, progress=False, keep_mean=True)
    assert set(out) == {"latents", "latents_flip", "mean"} and not torch.equal(out["latents"], out["mean"])
    again = encode_files(model, files, config, image_size=64, seed=0, progress=False)
    assert set(again) == {"latents", "latents_flip"} and torch.equal(again["latents"], out["latents"])
    orig_a, rec_a, _ = reconstruct(model, files, config, image_size=64)
    orig_b, rec_b, _ = reconstruct(model, files, config, image_size=64, means=out["mean"])
    assert np.array_equal(orig_a, orig_b) and np.array_equal(rec_a, rec_b)
    with pytest.raises(ValueError, match="5 posterior means for 6 files"):
        reconstruct(model, files, config, image_size=64, means=out["mean"][:5])


def test_one_image_folder_extracts(tmp_path):
    data = make_image_folder(tmp_path / "data", users=1, per_user=1)
    files = sorted(data.rglob("*.png"))
    manifest = {"data_dir": str(data), "users": ["ID_1"], "train": {"ID_1": [str(files[0].relative_to(data))]},
                "val": {"ID_1": [str(files[0].relative_to(data))]}}
    (tmp_path / "split.json").write_text(json.dumps(manifest))
    ckpt = make_tiny_tokenizer(tmp_path / "tok.safetensors")
    out, m = run_extract(tmp_path, ckpt)
    assert load_file(out / "train.safetensors")["latents"].shape == (1, 32, 4, 4)


def test_stats_reference_distance_and_source(workspace):
    ws, ckpt = workspace
    out, _ = run_extract(ws, ckpt)
    ref = {"mean": torch.zeros(1, 32, 1, 1), "std": torch.ones(1, 32, 1, 1)}
    torch.save(ref, ws / "ref_stats.pt")
    params = write_params(ws / "p.yaml", {"stats": {"reference": str(ws / "ref_stats.pt"), "source": "reference"}})
    m = stats.main(str(params), latents_path=str(out / "train.safetensors"), out=str(ws / "chosen.pt"),
                   metrics_path=str(ws / "stats.json"))
    assert m["reference"]["mean_l2_distance"] > 0 and "std_log_ratio_rms" in m["reference"]
    assert torch.equal(torch.load(ws / "chosen.pt", weights_only=True)["std"], ref["std"])


def test_stats_errors():
    z = torch.randn(4, 3, 2, 2)
    z[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/Inf \(first offending samples: \[1\]\)"):
        compute_stats(z)
    z = torch.randn(4, 3, 2, 2)
    z[:, 2] = 0.5
    with pytest.raises(ValueError, match=r"latent channels \[2\] have zero std"):
        compute_stats(z)


def test_missing_split_and_bad_tokenizer_errors(tmp_path):
    params = write_params(tmp_path / "p.yaml", {})
    nope = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="run the `split` stage"):
        extract.main(str(params), split_path=str(tmp_path / "split.json"), out_dir=str(tmp_path / "l"),
                     tokenizer_path=nope)
    data = make_image_folder(tmp_path / "data", users=2, per_user=2)
    (tmp_path / "split.json").write_text(json.dumps(make_split(data, split_config(0.5), 0)))
    with pytest.raises((FileNotFoundError, ValueError), match="nope.safetensors"):
        extract.main(str(params), split_path=str(tmp_path / "split.json"), out_dir=str(tmp_path / "l"),
                     tokenizer_path=nope)
    assert not (tmp_path / "l").exists()


def test_image_batches_in_order(tmp_path):
    data = make_image_folder(tmp_path / "data", users=1, per_user=5)
    files = sorted((data / "ID_1").iterdir())
    batches = list(image_batches(files, 32, 2))
    assert [len(b) for b in batches] == [2, 2, 1] and batches[0].shape[1:] == (32, 32, 3)
    assert (torch.from_numpy(np.concatenate(batches)) == torch.from_numpy(load_images(files, 32))).all()
