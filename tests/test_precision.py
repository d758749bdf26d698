"""Precision choice: `auto` picks bf16 where the hardware computes it natively, fp32 elsewhere."""
from pathlib import Path

import pytest
import torch

from mdgen import generation, latents, training
from mdgen.generation import sample_autocast
from mdgen.latents import autocast_dtype, cpu_has_native_bf16
from mdgen.training import auto_precision


def test_native_bf16_detection_follows_cpuinfo():
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    assert cpu_has_native_bf16() == (" avx512_bf16" in flags or " amx_bf16" in flags)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu(monkeypatch, native):
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert auto_precision("auto", "auto") == ("bf16-mixed" if native else "32-true")
    assert auto_precision("auto", "gpu") == "bf16-mixed"
    assert auto_precision("32-true", "cpu") == "32-true"  # an explicit choice is kept


@pytest.mark.parametrize("native", [True, False])
def test_sample_precision(monkeypatch, native):
    monkeypatch.setattr(generation, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert sample_autocast(cpu, "auto") == (torch.bfloat16 if native else None)
    assert sample_autocast(cpu, "fp32") is None and sample_autocast(cpu, "bf16") == torch.bfloat16
    assert sample_autocast(torch.device("cuda"), "auto") == torch.bfloat16
    with pytest.raises(ValueError, match="sample.precision = 'half'"):
        sample_autocast(cpu, "half")
    # extract's latents stay fp32 on every CPU
    assert autocast_dtype(cpu) is None and latents.autocast_dtype(torch.device("cuda")) == torch.bfloat16
