"""mdgen: user-conditioned radar micro-Doppler spectrogram generation.

    from mdgen import SpectrogramGenerator
    gen = SpectrogramGenerator.from_pretrained("models/dit")   # after `dvc repro`, in the repository root
    images = gen.generate("ID_3", n=16)                         # uint8 [16, H, W, 3]

(docs/python-api.md). The export is lazy (PEP 562), so `import mdgen.split` does not pay for torch.
"""

# the one version in the code (`mdgen --version`); pyproject.toml's must equal it (tests/test_api.py)
__version__ = "0.1.0"

# name -> the module that defines it, imported on first use. Code inside mdgen imports from that module,
# never through this table (tests/test_api.py), so that tests/test_dvc_deps.py sees the dependency.
_LAZY = {"SpectrogramGenerator": "mdgen.generator"}

__all__ = ["SpectrogramGenerator", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mdgen' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
