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
    assert lightning_precision("auto", "gpu") == "bf16-mixed"
    assert lightning_precision("32-true", "cpu") == "32-true"  # an explicit choice is kept


@pytest.mark.parametrize("native", [True, False])
def test_inference_precision(monkeypatch, native):
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if native else None)
    assert autocast_dtype(cpu, "fp32") is None and autocast_dtype(cpu, "bf16") == torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    with pytest.raises(ValueError, match="precision 'half': expected one of auto, fp32, bf16"):
        autocast_dtype(cpu, "half")
