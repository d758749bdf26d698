"""`mdgen bench`: the CPU quick run and its JSON, and that every fast path computes what the plain path does."""
import dataclasses
import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mdgen import bench, cli
from mdgen.bench import cli as bench_cli
from mdgen.bench import common
from mdgen.bench import sample as bench_sample
from mdgen.bench import train as bench_train
from mdgen.bench.flops import flops_per_sample
from mdgen.dit import LightningDiT, build_dit
from mdgen.ode import sample_latents
from mdgen.tokenizer import AutoencoderKL

# the train section's TrainConfig comes from a params file: the repository's, passed explicitly
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

TOP_KEYS = {"device", "torch", "cuda", "python", "settings", "results"}
TRAIN_KEYS = {"batch", "compiled", "warmup_s", "step_ms", "step_ms_repeats", "samples_per_s", "fwd_gflops_per_sample",
              "tflops", "peak_tflops", "mfu", "loss"}
SAMPLE_KEYS = {"batch", "steps", "guided_steps", "skip_uncond", "compiled", "cuda_graphs", "warmup_s", "cfg_forward_ms",
               "cond_forward_ms", "decode_ms", "cfg_forward_tflops", "cfg_forward_mfu", "latents_images_per_s",
               "images_per_s", "latents_images_per_s_skip_uncond", "images_per_s_skip_uncond",
               "latents_images_per_s_full_cfg", "images_per_s_full_cfg", "e2e"}
TOKENIZER_KEYS = {"device", "batch", "repeats", "dtype", "compiled", "channels_last", "encode_images_per_s",
                  "decode_images_per_s", "image_size"}
# one tiny FlowModule for the step-equivalence tests (the quick DiT)
TINY = dict(common.QUICK_DIT, num_classes=10)


def test_quick_all_runs_on_cpu_and_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "x.json"
    assert cli.main(["bench", "--quick", "--what", "all", "--params", str(PARAMS), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == TOP_KEYS
    assert report["device"]["type"] == "cpu" and report["device"]["peak_tflops"] is None
    assert report["torch"] == torch.__version__
    s = report["settings"]
    assert s["quick"] and s["precision"] == "fp32" and not s["compile"] and s["skip_uncond"]
    assert s["params"] == str(PARAMS)
    train, sample, tok = (report["results"][k] for k in ("train", "sample", "tokenizer"))
    assert set(train) == TRAIN_KEYS and set(sample) == SAMPLE_KEYS and set(tok) == TOKENIZER_KEYS
    # model TFLOP/s is 3 x forward FLOPs x samples/s; no peak on a CPU, so no fraction of it
    fwd = flops_per_sample(common.dit_config(s))
    assert train["fwd_gflops_per_sample"] == pytest.approx(fwd / 1e9)
    assert train["tflops"] == pytest.approx(3 * fwd * train["samples_per_s"] / 1e12)
    assert train["mfu"] is None and math.isfinite(train["loss"]) and train["samples_per_s"] > 0
    # the plan: 4 Euler steps on the shifted grid, t >= 0.1 guided
    assert sample["steps"] == 4 and sample["guided_steps"] == bench_sample.guided_steps(4, 2.0, 0.1, 0.3) == 2
    assert sample["latents_images_per_s"] == sample["latents_images_per_s_skip_uncond"]
    assert sample["images_per_s"] < sample["latents_images_per_s"]
    assert sample["e2e"]["steps"] == 4 and sample["e2e"]["latents_images_per_s"] > 0
    assert tok["encode_images_per_s"] > 0 and tok["decode_images_per_s"] > 0
    table = capsys.readouterr().out
    assert "samples/s" in table and "img/s latents" in table and "encode" in table


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch, caplog, capsys):
    class Broken(torch.nn.Module):  # what torch.compile(module) returns: a module, failing on first call
        def forward(self, *a, **k):
            raise RuntimeError("no C++ compiler")

    def broken_compile(fn, *args, **kwargs):
        if isinstance(fn, torch.nn.Module):
            return Broken()

        def call(*a, **k):
            raise RuntimeError("no C++ compiler")
        return call

    # FlowModule, Module.compile (sampling) and the tokenizer benchmark all go through torch.compile
    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="mdgen.accel"):
        report = bench.run(["--quick", "--what", "all", "--compile", "--repeats", "1", "--e2e-steps", "1",
                            "--params", str(PARAMS)])
    printed = capsys.readouterr().out
    for what in ("train", "sample", "tokenizer"):
        r = report["results"][what]
        assert "error" not in r, r
        assert r["compiled"] is False
        # the one fallback, mdgen.accel.compiled_or_eager: logs the reason, prints one line
        assert f"bench {what}: torch.compile failed (RuntimeError: no C++ compiler); running eager instead" in caplog.text
        assert f"bench {what}: torch.compile failed (RuntimeError); running eager instead" in printed


def test_train_section_needs_the_params_file(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(SystemExit, match=re.escape(f"mdgen bench: {missing} not found")):
        bench.run(["--quick", "--what", "train", "--params", str(missing)])
    # the other sections do not read it
    assert set(bench_cli._sections({"params": str(missing)}, ("sample", "tokenizer"))) == {"sample", "tokenizer"}


def test_train_config_is_params_yaml_with_the_flags_over_it():
    parser = bench_cli.build_parser()
    cfg = bench_cli.resolve(parser.parse_args(["--quick", "--batch", "3", "--seed", "7"]), torch.device("cpu"), parser)
    base_model, base = bench_train.load_train_config(PARAMS)
    model_config, config = bench_train.bench_config(base_model, base, cfg)
    assert (model_config.name, config.batch_size, config.compile, config.precision) == (
        common.QUICK_MODEL, 3, False, "32-true")
    # the training settings are params.yaml's
    unchanged = ("lr", "weight_decay", "beta2", "grad_clip", "ema_decay", "t_sampling", "cos_weight")
    assert all(getattr(config, k) == getattr(base, k) for k in unchanged)
    assert (model_config.class_dropout_prob, model_config.use_qknorm) == (base_model.class_dropout_prob,
                                                                          base_model.use_qknorm)
    model = bench_train.build_model(model_config)
    assert model.config["class_dropout_prob"] == base_model.class_dropout_prob
    assert {k: model.config[k] for k in common.QUICK_DIT} == common.QUICK_DIT
    assert model.config["num_classes"] == common.NUM_CLASSES
    assert model.config["attention"] == "auto"
    cfg = bench_cli.resolve(parser.parse_args(["--quick", "--attention", "fused"]), torch.device("cpu"), parser)
    model = bench_train.build_model(bench_train.bench_config(base_model, base, cfg)[0])
    assert {b.attn.attention for b in model.blocks} == {"fused"}  # the flag over params.yaml's model.attention


def test_cuda_graphs_need_compile():
    with pytest.raises(SystemExit):
        bench.run(["--quick", "--cuda-graphs", "--no-compile", "--params", str(PARAMS)])


@pytest.mark.parametrize("overrides", [{}, dict(use_swiglu=False, patch_size=2, wo_shift=True)])
def test_flops_per_sample_counts_every_matmul(overrides):
    model = LightningDiT(input_size=8, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=3,
                         **overrides).eval()
    # the math SDPA backend decomposes into bmm, which the counter sees (CPU's fused kernel it does not)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(3, 4, 8, 8), torch.rand(3), torch.tensor([0, 1, 2]))
    assert counter.get_total_flops() == 3 * flops_per_sample(model) == 3 * flops_per_sample(model.config)


def test_peak_table():
    assert common.device_peaks("NVIDIA H100 80GB HBM3")["bf16"] == 989.4
    assert common.device_peaks("NVIDIA H100 PCIe")["bf16"] == 756.5
    assert common.device_peaks("NVIDIA H200")["bf16"] == 989.4
    assert common.device_peaks("NVIDIA A100-SXM4-80GB")["tf32"] == 156.0
    assert common.device_peaks("Tesla T4") is None
    info = {"peak_tflops": common.device_peaks("NVIDIA H200")}
    assert common.peak_for(info, "fp32", tf32=True) == 494.7 and common.peak_for(info, "fp32", tf32=False) == 66.9


# ----------------------------------------------------------------------------- same numbers

def _flow_module(compile: bool = False):
    from mdgen.dit_training import FlowModule
    model, config = bench_train.load_train_config(PARAMS)
    model = dataclasses.replace(model, name="LightningDiT-Tiny/1", overrides=TINY)
    config = dataclasses.replace(config, lr=1e-3, ema_decay=0.9, compile=compile)
    torch.manual_seed(0)
    return FlowModule(bench_train.build_model(model), config, seed=0).train()


def _run_steps(module, opt, n=3, **kw):
    g = torch.Generator().manual_seed(1)
    x1, y = torch.randn(6, 32, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g)
    losses = []
    for step in range(n):
        torch.manual_seed(100 + step)  # same t, noise and label dropout in both runs
        losses.append(bench_train.train_step(module, opt, (x1, y), **kw).item())
    return losses


def _params(module):
    return torch.cat([p.detach().flatten() for p in module.model.parameters()])


def _ema(module):
    return torch.cat([p.detach().flatten() for p in module.ema.parameters()])


def test_fast_train_step_matches_plain_step():
    # plain: math attention, foreach AdamW, per-tensor EMA, loss read every step
    plain = _flow_module()
    with common.sdpa_backend("math"):
        ref = _run_steps(plain, bench_train.make_adamw(plain, fused=False), ema="loop", host_sync=True)
    # fast: PyTorch's attention kernel (flash on CPU), fused AdamW, one lerp for the EMA, no host read
    fast = _flow_module()
    got = _run_steps(fast, bench_train.make_adamw(fast, fused=True), ema="foreach")
    assert got == pytest.approx(ref, rel=1e-5)
    torch.testing.assert_close(_params(fast), _params(plain), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_ema(fast), _ema(plain), rtol=1e-5, atol=1e-6)
    assert not torch.equal(_ema(fast), _params(fast))  # the EMA moved, and lags the weights


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no Trainer attached here
def test_train_step_is_the_lightning_step():
    # same loss as FlowModule.training_step computes for the same batch and RNG state
    module = _flow_module()
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(6, 32, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g))
    torch.manual_seed(5)
    ref = module.training_step(batch, 0).item()
    torch.manual_seed(5)
    assert bench_train.train_step(module, bench_train.make_adamw(module, fused=False), batch).item() == ref


@pytest.mark.slow  # ~1-2 min: inductor compiles forward and backward with the host C++ compiler
def test_compiled_train_step_matches_eager(monkeypatch):
    import torch._inductor.config as inductor_config
    monkeypatch.setattr(inductor_config, "fallback_random", True)  # label dropout draws as eager does
    eager = _flow_module()
    ref = _run_steps(eager, bench_train.make_adamw(eager, fused=False), n=2)
    compiled = _flow_module(compile=True)
    assert compiled.compiled
    got = _run_steps(compiled, bench_train.make_adamw(compiled, fused=False), n=2)
    assert got == pytest.approx(ref, rel=1e-4)
    torch.testing.assert_close(_params(compiled), _params(eager), rtol=1e-4, atol=1e-5)


def test_skip_uncond_gives_the_full_cfg_samples_with_fewer_guided_steps():
    torch.manual_seed(0)
    model = build_dit("LightningDiT-Tiny/1", **TINY).eval()
    # the zero-initialised adaLN/output would make every velocity 0: give the net something to say
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = []
    model.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    labels = torch.tensor([1, 4, 7])
    noise = torch.randn(3, 32, 8, 8, generator=torch.Generator().manual_seed(2))
    cfg = bench_cli.resolve(bench_cli.build_parser().parse_args(["--quick", "--steps", "6", "--cfg-scale", "3",
                                                                 "--cfg-interval-start", "0.3"]),
                            torch.device("cpu"), bench_cli.build_parser())
    config = bench_sample.sample_config(cfg)
    skip = sample_latents(model, labels, config, noise=noise, skip_uncond=True)
    guided_skip = rows.count(6)
    rows.clear()
    full = sample_latents(model, labels, config, noise=noise, skip_uncond=False)
    torch.testing.assert_close(skip, full, rtol=1e-5, atol=1e-5)
    assert rows == [6] * 6  # both halves at every step
    assert 0 < guided_skip == bench_sample.guided_steps(6, 3.0, 0.3, 0.3) < 6


def test_channels_last_tokenizer_matches_default():
    torch.manual_seed(0)
    tok = AutoencoderKL(**common.QUICK_TOKENIZER).eval()
    z = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = torch.cat(bench_sample.decoder(tok, None, channels_last=False)(z))
    got = torch.cat(bench_sample.decoder(tok, None, channels_last=True)(z))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        enc = tok.encode(x).mean
        enc_cl = tok.to(memory_format=torch.channels_last).encode(x.contiguous(memory_format=torch.channels_last)).mean
    torch.testing.assert_close(enc_cl, enc, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_all_on_cuda_with_every_fast_path():
    report = bench.run(["--quick", "--what", "all", "--device", "cuda", "--precision", "bf16", "--compile",
                        "--cuda-graphs", "--repeats", "1", "--e2e-steps", "2", "--params", str(PARAMS)])
    assert report["device"]["type"] == "cuda"
    for what, r in report["results"].items():
        assert "error" not in r, (what, r)
        assert r["compiled"], what  # compile must work on the GPU image: no silent fallback there
    assert report["results"]["sample"]["cuda_graphs"]
