"""Precision choice: `auto` picks bf16 where the hardware computes it natively, fp32 elsewhere."""
from pathlib import Path

import pytest
import torch

from mdgen import accel
from mdgen.accel import autocast_dtype, cpu_has_native_bf16, lightning_precision


def test_native_bf16_detection_follows_cpuinfo():
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    assert cpu_has_native_bf16() == (" avx512_bf16" in flags or " amx_bf16" in flags)


@pytest.mark.parametrize("native", [True, False])
def test_training_precision_on_cpu(monkeypatch, native):
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lightning_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert lightning_precision("auto", "auto") == ("bf16-mixed" if native else "32-true")
    assert lightning_precision("32-true", "cpu") == "32-true"  # an explicit choice is kept


@pytest.mark.parametrize("native", [True, False])
def test_inference_precision(monkeypatch, native):
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if native else None)
    assert autocast_dtype(cpu, "fp32") is None and autocast_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision 'half': expected one of auto, fp32, bf16"):
        autocast_dtype(cpu, "half")


# (major, minor) compute capability -> what `auto` picks on that card
CARDS = {"P100": (6, 0), "V100": (7, 0), "T4": (7, 5), "A100": (8, 0), "L4": (8, 9), "H100": (9, 0)}


@pytest.mark.parametrize("card", CARDS)
def test_auto_precision_follows_the_cards_compute_capability(monkeypatch, card):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: CARDS[card])
    native = CARDS[card][0] >= 8
    cuda = torch.device("cuda")
    # training: Lightning's 16-mixed (fp16 autocast with a gradient scaler) where bf16 would be emulated
    assert lightning_precision("auto", "auto") == lightning_precision("auto", "gpu") == \
        ("bf16-mixed" if native else "16-mixed")
    # sampling and encoding: the same choice as autocast dtypes
    assert autocast_dtype(cuda, "auto") == (torch.bfloat16 if native else torch.float16)
    # decoding never in fp16: the VA-VAE decoder's activations can overflow it
    assert autocast_dtype(cuda, "auto", fp16_safe=False) == (torch.bfloat16 if native else None)
    assert autocast_dtype(cuda, "fp16", fp16_safe=False) is None
    assert autocast_dtype(cuda, "fp32") is None  # an explicit choice is kept
