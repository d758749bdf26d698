"""mdgen.tokenizer: upstream parity, f16d32 layout, checkpoint loading and its failure modes."""
from __future__ import annotations

import builtins
import hashlib
import json
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mdgen.images import to_uint8
from mdgen.io import file_sha256
from mdgen.tokenizer import AutoencoderKL, infer_config, load_tokenizer, save_tokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PARITY = json.loads((FIXTURES / "vavae_tiny_parity.json").read_text())
# float32 kernels differ between CPUs: the fixture came from an AVX-512 machine, and an AVX2-only one decodes up
# to 3.4e-5 away from it (accumulation order over ~20 convolutions; encoder outputs stay within 4e-6). A wrong
# layer, key or posterior is off by orders of magnitude more, and the uint8 check below stays at one level.
ATOL = 1e-4
TRAINING_KEYS = {
    "loss.logvar": torch.zeros(()),
    "loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4),
    "foundation_model.model.cls_token": torch.randn(1, 1, 16),
    "foundation_model.model.blocks.0.attn.qkv.weight": torch.randn(48, 16),
    "linear_proj.weight": torch.randn(16, 32, 1, 1),
}


def tiny_config() -> dict:
    cfg = PARITY["tiny_config"]
    keys = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "in_channels",
            "resolution", "z_channels", "embed_dim", "resamp_with_conv")
    return {k: cfg[k] for k in keys}


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "vavae_tiny_parity.safetensors")


@pytest.fixture(scope="module")
def ref_state_dict(reference) -> dict[str, torch.Tensor]:
    prefix = "state_dict."
    return {k[len(prefix):]: v for k, v in reference.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def ref_model(ref_state_dict) -> AutoencoderKL:
    model = AutoencoderKL(**tiny_config()).eval()
    model.load_state_dict({k: v.float() for k, v in ref_state_dict.items()}, strict=True)
    return model


def outputs(model: AutoencoderKL, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        encoder_out = model.encoder(x)
        post = model.encode(x)
        z_sample = post.mean + post.std * eps
        return {"encoder_out": encoder_out, "moments": model.quant_conv(encoder_out), "posterior_mean": post.mean,
                "posterior_logvar": post.logvar, "posterior_std": post.std, "z_mode": post.mode(),
                "z_sample": z_sample, "decoded_mode": model.decode(post.mode()),
                "decoded_sample": model.decode(z_sample)}


def assert_matches_reference(model: AutoencoderKL, reference: dict) -> dict[str, float]:
    got = outputs(model, reference["x"], reference["eps"])
    diffs = {k: (v - reference[k]).abs().max().item() for k, v in got.items()}
    bad = {k: d for k, d in diffs.items() if not d <= ATOL}
    assert not bad, f"max abs diff above {ATOL}: {bad}"
    # uint8 through our decoder: a float diff of 1e-5 can only move a pixel sitting on a rounding edge
    ours = to_uint8(got["decoded_mode"]).astype(int)
    assert np.abs(ours - reference["decoded_mode_uint8_nhwc"].numpy().astype(int)).max() <= 1
    return diffs


# ---------------------------------------------------------------------------- parity

def test_seeded_init_matches_upstream_construction_order(ref_state_dict):
    # the fixture holds upstream's seed-0 init rounded to fp16: same order of construction, same numbers
    torch.manual_seed(0)
    model = AutoencoderKL(**tiny_config())
    assert sum(p.numel() for p in model.parameters()) == PARITY["num_parameters"]
    sd = model.state_dict()
    assert sorted(sd) == sorted(ref_state_dict) and len(sd) == PARITY["state_dict_num_keys"]
    for k, v in sd.items():
        assert torch.equal(v.half(), ref_state_dict[k]), k


def test_parity_with_upstream(ref_model, reference):
    assert set(PARITY["tensors"]) == set(reference) - {k for k in reference if k.startswith("state_dict.")}
    assert_matches_reference(ref_model, reference)


def test_to_uint8_matches_upstream_on_reference_floats(reference):
    # conversion alone is exact, independent of conv backends
    np.testing.assert_array_equal(to_uint8(reference["decoded_mode"]), reference["decoded_mode_uint8_nhwc"].numpy())


def test_posterior_sample_uses_generator(ref_model, reference):
    with torch.no_grad():
        post = ref_model.encode(reference["x"])
    z = post.sample(generator=torch.Generator().manual_seed(7))
    eps = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z, post.mean + post.std * eps, rtol=0, atol=0)
    assert not torch.equal(z, post.sample(generator=torch.Generator().manual_seed(8)))
    assert torch.equal(post.mode(), post.mean)
    assert post.logvar.min() >= -30 and post.logvar.max() <= 20
    torch.testing.assert_close(post.std, torch.exp(0.5 * post.logvar))


def test_logvar_is_clamped():
    from mdgen.tokenizer import DiagonalGaussian
    post = DiagonalGaussian(torch.tensor([0.0, 0.0, -100.0, 100.0]).reshape(1, 4, 1, 1))
    assert post.logvar.flatten().tolist() == [-30.0, 20.0]


# ---------------------------------------------------------------------------- architecture

def test_f16d32_keys_shapes_and_params():
    ref = json.loads((FIXTURES / "vavae_f16d32_keys.json").read_text())
    with torch.device("meta"):
        model = AutoencoderKL()  # defaults are the f16d32 VA-VAE
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == [(e["key"], e["shape"]) for e in ref["keys"]]
    counts = ref["counts"]
    assert sum(p.numel() for p in model.parameters()) == counts["parameters_total"] == 69_836_067
    for part in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
        assert sum(p.numel() for p in getattr(model, part).parameters()) == counts[part], part
    assert infer_config(model.state_dict()) == model.config


def test_other_config_shapes_and_inference(tmp_path):
    # not the fixture's layout: 3 levels, 3 res blocks, attention at two levels, pooling instead of conv
    cfg = dict(ch=32, out_ch=1, ch_mult=[1, 2, 2], num_res_blocks=3, attn_resolutions=[32, 16], in_channels=1,
               resolution=64, z_channels=8, embed_dim=4, resamp_with_conv=False)
    torch.manual_seed(1)
    model = AutoencoderKL(**cfg).eval()
    assert len(model.encoder.down[0].attn) == 0 and len(model.encoder.down[1].attn) == 3
    assert len(model.decoder.up[2].block) == 4 and len(model.decoder.up[2].attn) == 4
    x = torch.rand(2, 1, 48, 32) * 2 - 1
    with torch.no_grad():
        post = model.encode(x)
        assert post.mean.shape == (2, 4, 12, 8)
        y = model.decode(post.mode())
    assert y.shape == x.shape
    inferred = infer_config(model.state_dict())
    assert inferred["attn_resolutions"] == [128, 64] and inferred["resolution"] == 256
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # no config metadata
    loaded = load_tokenizer(path)
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(x).mode()), y)


# ---------------------------------------------------------------------------- loading

def test_lightning_pt_drops_training_keys(tmp_path, ref_model, reference, caplog):
    path = tmp_path / "vavae.pt"
    state = {**{k: v.clone() for k, v in ref_model.state_dict().items()}, **TRAINING_KEYS}
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000}, path)
    with caplog.at_level(logging.INFO, logger="mdgen.tokenizer"):
        model = load_tokenizer(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.config["attn_resolutions"] == [16] and model.config["resolution"] == 256  # inferred
    assert_matches_reference(model, reference)
    assert re.search(r"ignored 5 training-only keys .*foundation_model\.\*: 2.*linear_proj\.\*: 1.*loss\.\*: 2",
                     caplog.text), caplog.text


def test_bare_fp16_pt_is_upcast(tmp_path, ref_state_dict, reference):
    path = tmp_path / "bare.ckpt"
    torch.save(dict(ref_state_dict), path)  # the fixture's weights are float16
    model = load_tokenizer(path, config=tiny_config())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config == tiny_config()
    assert_matches_reference(model, reference)


def test_safetensors_round_trip_fp16(tmp_path, ref_model, reference):
    path = tmp_path / "tok.safetensors"
    save_tokenizer(ref_model, path, metadata={"source": "fixture", "step": 5}, dtype=torch.float16)
    on_disk = load_file(path)
    assert {v.dtype for v in on_disk.values()} == {torch.float16}
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"]) == tiny_config() and meta["source"] == "fixture" and meta["step"] == "5"
    assert [p.name for p in tmp_path.iterdir()] == ["tok.safetensors"]  # atomic: no temp left behind

    model = load_tokenizer(path)  # config from metadata (resolution 64, attn [4])
    assert model.config == tiny_config()
    assert_matches_reference(model, reference)  # fixture weights are fp16-exact, so nothing is lost

    bare = tmp_path / "bare.safetensors"
    save_file(on_disk, str(bare))  # same tensors, no metadata: config inferred
    model = load_tokenizer(bare)
    assert model.config["resolution"] == 256 and model.config["attn_resolutions"] == [16]
    assert_matches_reference(model, reference)


def test_safetensors_training_keys_dropped(tmp_path, ref_model, reference, caplog):
    path = tmp_path / "with_extra.safetensors"
    save_file({**{k: v.contiguous() for k, v in ref_model.state_dict().items()}, **TRAINING_KEYS}, str(path))
    with caplog.at_level(logging.INFO, logger="mdgen.tokenizer"):
        model = load_tokenizer(path)
    assert_matches_reference(model, reference)
    assert "ignored 5 training-only keys" in caplog.text


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.mark.parametrize("writer", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}, "hook": _Evil(marker)}
    if writer == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Evil(control)))  # the payload is real: plain unpickling runs it
    assert control.exists() and not marker.exists()
    with pytest.raises(ValueError, match=r"refusing to load .*evil\.pt.*unpickling"):
        load_tokenizer(path)
    assert not marker.exists()


def _tiny_state(ref_model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in ref_model.state_dict().items()}


def test_missing_key_is_named(tmp_path, ref_model):
    state = _tiny_state(ref_model)
    del state["decoder.up.2.block.1.conv2.weight"]
    path = tmp_path / "missing.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match=r"(?s)missing\.pt.*1 missing keys: decoder\.up\.2\.block\.1\.conv2\.weight"):
        load_tokenizer(path)


def test_unexpected_key_is_named(tmp_path, ref_model):
    state = {**_tiny_state(ref_model), "encoder.extra_head.weight": torch.zeros(3)}
    path = tmp_path / "unexpected.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"(?s)1 unexpected keys: encoder\.extra_head\.weight"):
        load_tokenizer(path)


def test_shape_mismatch_names_key_and_config(tmp_path, ref_model):
    path = tmp_path / "tiny.pt"
    torch.save(_tiny_state(ref_model), path)
    wrong = {**tiny_config(), "embed_dim": 16}
    with pytest.raises(ValueError, match=r"(?s)tiny\.pt.*'embed_dim': 16.*config given.*shape mismatches: "
                                         r"quant_conv\.weight: checkpoint \(64, 64, 1, 1\) vs model \(32, 64, 1, 1\)"):
        load_tokenizer(path, config=wrong)


def test_unreadable_and_unknown_files(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_tokenizer(bad)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"weights\.bin.*\.safetensors"):
        load_tokenizer(other)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_tokenizer(tmp_path / "nope.pt")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 32)
    with pytest.raises(ValueError, match="broken.safetensors"):
        load_tokenizer(broken)


def test_file_sha256_streams(tmp_path):
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(0).bytes(3 * 1024 + 17)
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=1024) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- benchmark

def test_benchmark_falls_back_to_eager_when_compile_fails(monkeypatch, caplog):
    from mdgen.bench import tokenizer as bench_tokenizer

    def broken_compile(fn, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")
        return fail

    monkeypatch.setattr(bench_tokenizer.torch, "compile", broken_compile)
    model = AutoencoderKL(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], resolution=32)
    with caplog.at_level(logging.WARNING, logger="mdgen.accel"):
        r = bench_tokenizer.benchmark_tokenizer(batch=1, compile=True, channels_last=True, image_size=32, model=model,
                                                warmup=0, repeats=1)
    assert "torch.compile failed (RuntimeError: no compiler here)" in caplog.text
    assert r["compiled"] is False and r["encode_images_per_s"] > 0 and r["decode_images_per_s"] > 0


@pytest.mark.parametrize("name", ["tok.safetensors", "tok.pt"])
def test_a_truncated_checkpoint_is_named_with_what_to_do(tmp_path, ref_model, name):
    from mdgen.errors import BadFileError
    path = tmp_path / name
    if path.suffix == ".pt":
        torch.save({"state_dict": _tiny_state(ref_model)}, path)
    else:
        save_tokenizer(ref_model, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # a killed copy or an interrupted `dvc pull`
    with pytest.raises(BadFileError, match=rf"^cannot read tokenizer checkpoint {re.escape(str(path))}: truncated "
                                           r"or corrupt \(.*\); re-create it with `dvc repro`, .*`dvc checkout`$"):
        load_tokenizer(path)
