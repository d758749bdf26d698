"""LightningDiT against upstream reference tensors, checkpoint key lists, init and the option knobs."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdgen.dit import LightningDiT, LightningDiT_configs, build_dit
from mdgen.errors import ParamsError

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = ["lightningdit_tiny_parity", "lightningdit_tiny_qknorm_parity"]
TOL = 1e-5


def load_upstream(name):
    """(model config, fixture tensors, state_dict with the 'state_dict.' prefix stripped)."""
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    cfg = dict(meta["model_config"])
    assert cfg.pop("learn_sigma") is False and cfg.pop("use_checkpoint") is False
    tensors = load_file(FIXTURES / f"{name}.safetensors")
    sd = {k.removeprefix("state_dict."): v for k, v in tensors.items() if k.startswith("state_dict.")}
    return cfg, tensors, sd


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", PARITY)
def test_fixed_tables_equal_upstream(name):
    cfg, _, sd = load_upstream(name)
    model = LightningDiT(**cfg)
    assert max_diff(model.pos_embed, sd["pos_embed"]) <= TOL
    assert max_diff(model.feat_rope.freqs_cos, sd["feat_rope.freqs_cos"]) <= TOL
    assert max_diff(model.feat_rope.freqs_sin, sd["feat_rope.freqs_sin"]) <= TOL


@pytest.mark.parametrize("attention", ["fused", "plain"])
@pytest.mark.parametrize("name", PARITY)
def test_forward_and_cfg_match_upstream(name, attention):
    cfg, d, sd = load_upstream(name)
    model = LightningDiT(**cfg, attention=attention)
    model.load_state_dict(sd, strict=True)
    model.eval()
    with torch.no_grad():
        diffs = {
            "out": max_diff(model(d["x"], d["t"], d["y"]), d["out"]),
            "cfg_raw_high": max_diff(model(d["cfg_x"], d["cfg_t_high"], d["cfg_y"]), d["cfg_raw_high"]),
            "cfg_out_high": max_diff(
                model.forward_with_cfg(d["cfg_x"], d["cfg_t_high"], d["cfg_y"], 4.0, 0.11, "first3"), d["cfg_out_high"]),
            "cfg_out_low": max_diff(
                model.forward_with_cfg(d["cfg_x"], d["cfg_t_low"], d["cfg_y"], 4.0, 0.11, "first3"), d["cfg_out_low"]),
            # upstream cfg_interval=False == no interval == start 0
            "cfg_out_nointerval_low": max_diff(
                model.forward_with_cfg(d["cfg_x"], d["cfg_t_low"], d["cfg_y"], 4.0, 0.0, "first3"),
                d["cfg_out_nointerval_low"]),
        }
    print(name, diffs)
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("name", PARITY)
def test_state_dict_keys_in_upstream_order(name):
    cfg, _, _ = load_upstream(name)
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    assert list(LightningDiT(**cfg).state_dict()) == meta["state_dict_keys"]


def test_plain_attention_trains_as_fused():
    """auto picks the written-out product on a CPU: same outputs and gradients as SDPA (fp32) and close in bf16."""
    torch.manual_seed(0)
    kw = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=2, num_classes=3,
              class_dropout_prob=0.0)  # no random labels: the three see one batch
    fused, plain, auto = (LightningDiT(**kw, attention=a) for a in ("fused", "plain", "auto"))
    with torch.no_grad():  # adaLN-Zero starts every block as the identity: give attention a say
        for p in fused.parameters():
            p.normal_(0, 0.2)
    plain.load_state_dict(fused.state_dict())
    auto.load_state_dict(fused.state_dict())
    x, t, y = torch.randn(4, 4, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 0])
    outs, grads = [], []
    for m in (fused, plain, auto):
        out = m(x, t, y)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert max_diff(outs[0], outs[1]) <= 1e-5 and max_diff(grads[0], grads[1]) <= 1e-5
    assert not torch.equal(outs[0], outs[1])  # two kernels, not one
    assert torch.equal(outs[1], outs[2]) and torch.equal(grads[1], grads[2])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf = [m(x, t, y).float() for m in (fused, plain)]
    assert max_diff(bf[0], bf[1]) <= 0.05 * outs[0].abs().max().item()
    with pytest.raises(ValueError, match="attention 'flash': expected one of auto, fused, plain"):
        LightningDiT(**kw, attention="flash")


def test_cfg_all_channels_is_standard_guidance():
    cfg, d, sd = load_upstream("lightningdit_tiny_parity")
    model = LightningDiT(**cfg)
    model.load_state_dict(sd)
    model.eval()
    x, t, y = d["cfg_x"], d["cfg_t_high"], d["cfg_y"]
    with torch.no_grad():
        out = model.forward_with_cfg(x, t, y, 4.0, 0.11, "all")
        half = x[:2]
        cond, uncond = model(half, t[:2], y[:2]), model(half, t[2:], y[2:])
    expected = uncond + 4.0 * (cond - uncond)
    assert max_diff(out[:2], expected) <= TOL and torch.equal(out[:2], out[2:])
    with pytest.raises(AssertionError, match="guidance_channels"):
        model.forward_with_cfg(x, t, y, 4.0, 0.0, "first4")


@pytest.mark.parametrize("name,fixture,n_params", [
    ("LightningDiT-B/1", "lightningdit_b1_keys.json", 130_556_192),
    ("LightningDiT-XL/1", "lightningdit_xl1_keys.json", 675_256_736),
])
def test_upstream_checkpoint_keys_shapes_and_counts(name, fixture, n_params):
    ref = json.loads((FIXTURES / fixture).read_text())
    with torch.device("meta"):
        model = build_dit(name, num_classes=1000)
        qk_model = build_dit(name, num_classes=1000, use_qknorm=True)
    sd = model.state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == [(e["key"], e["shape"]) for e in ref["keys"]]
    assert sum(p.numel() for p in model.parameters()) == ref["counts"]["parameters_total"] == n_params
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ref["counts"]["parameters_trainable"]
    assert sum(b.numel() for b in model.buffers()) == ref["counts"]["buffers_total"]
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    for e in ref["keys"]:
        kind = "parameter" if e["key"] in params else "buffer" if e["key"] in buffers else None
        assert kind == e["kind"], e["key"]
        if kind == "parameter":
            assert params[e["key"]].requires_grad == e["requires_grad"], e["key"]
    extra = set(qk_model.state_dict()) - set(sd)
    assert extra == {e["key"] for e in ref["extra_keys_when_use_qknorm_true"]}


def test_init_is_adaln_zero():
    model = build_dit("LightningDiT-Tiny/1", input_size=4, num_classes=3)
    for block in model.blocks:
        assert not block.adaLN_modulation[-1].weight.any() and not block.adaLN_modulation[-1].bias.any()
    assert not model.final_layer.linear.weight.any()
    assert abs(model.y_embedder.embedding_table.weight.std().item() - 0.02) < 0.004
    assert abs(model.t_embedder.mlp[0].weight.std().item() - 0.02) < 0.004
    fan_in, fan_out = model.blocks[0].attn.qkv.weight.shape[1], model.blocks[0].attn.qkv.weight.shape[0]
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert model.blocks[0].attn.qkv.weight.abs().max() <= bound
    out = model(torch.randn(2, 32, 4, 4), torch.rand(2), torch.tensor([0, 2]))
    assert not out.any()  # zero output layer: the initial velocity is 0


def test_label_dropout_in_training_only():
    model = LightningDiT(input_size=4, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=3,
                         class_dropout_prob=1.0)
    seen = []
    model.y_embedder.embedding_table.register_forward_hook(lambda m, inp, out: seen.append(inp[0].tolist()))
    x, t, y = torch.randn(2, 4, 4, 4), torch.rand(2), torch.tensor([0, 1])
    model.train()
    model(x, t, y)
    model.eval()
    model(x, t, y)
    model(x, t, y, force_drop_ids=torch.tensor([1, 0]))
    assert seen == [[3, 3], [0, 1], [3, 1]]
    assert model.null_class == 3
    assert LightningDiT(input_size=4, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=3,
                        class_dropout_prob=0.0).null_class is None


@pytest.mark.parametrize("overrides,present,absent", [
    (dict(patch_size=2), ["x_embedder.proj.weight"], []),
    (dict(use_rope=False), [], ["feat_rope.freqs_cos"]),
    (dict(use_swiglu=False), ["blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight"], ["blocks.0.mlp.w12.weight"]),
    (dict(use_rmsnorm=False), [], ["blocks.0.norm1.weight", "final_layer.norm_final.weight"]),
    (dict(use_rmsnorm=False, use_qknorm=True), ["blocks.0.attn.q_norm.bias"], []),
    (dict(wo_shift=True), [], []),
])
def test_option_knobs_build_and_run(overrides, present, absent):
    model = LightningDiT(input_size=8, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=3,
                         **overrides)
    sd = model.state_dict()
    assert all(k in sd for k in present) and not any(k in sd for k in absent)
    if overrides.get("wo_shift"):
        assert sd["blocks.0.adaLN_modulation.1.weight"].shape == (4 * 64, 64)
    if "patch_size" in overrides:
        assert model.x_embedder.num_patches == 16 and sd["final_layer.linear.weight"].shape == (2 * 2 * 4, 64)
    for p in model.parameters():  # non-zero output layer, so the check below sees real values
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    out = model(torch.randn(3, 4, 8, 8), torch.rand(3), torch.tensor([0, 1, 2]))
    assert out.shape == (3, 4, 8, 8) and out.isfinite().all() and out.any()


def test_unpatchify_inverts_patch_layout():
    model = LightningDiT(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=1, num_heads=2)
    img = torch.randn(2, 3, 8, 8)
    # tokens in the (p, q, c) per-patch order the final linear produces
    tokens = img.reshape(2, 3, 4, 2, 4, 2).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 12)
    assert torch.equal(model.unpatchify(tokens), img)


def test_build_dit_registry_and_errors():
    assert {"LightningDiT-B/1", "LightningDiT-B/2", "LightningDiT-L/2", "LightningDiT-XL/1", "LightningDiT-XL/2",
            "LightningDiT-Tiny/1", "LightningDiT-S/1"} <= set(LightningDiT_configs)
    model = build_dit("LightningDiT-Tiny/1", num_classes=7, input_size=4)
    assert model.config["num_classes"] == 7 and model.config["hidden_size"] == 192
    with pytest.raises(ParamsError, match="LightningDiT-B/1"):
        build_dit("LightningDiT-Huge/1")
    with pytest.raises(TypeError):
        build_dit("LightningDiT-Tiny/1", learn_sigma=True)
