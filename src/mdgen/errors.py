"""mdgen's own error types: problems the user can fix, told in one line by the command line.

Anything else that escapes a command is a bug and keeps its traceback (`mdgen.cli`). Each type
also derives from the builtin that code and tests have always caught (ValueError, ...), so
`except ValueError` keeps working.
"""
from __future__ import annotations


class MdgenError(Exception):
    """A problem with what the user gave mdgen (params, data, files) or with the state of the workspace."""


class ParamsError(MdgenError, ValueError):
    """params.yaml or a command-line option: a missing or unknown key, a value of the wrong type or range."""


class DataError(MdgenError, ValueError):
    """The user's data folder: unreadable images, empty or misplaced person folders, mismatched sets."""


class BadFileError(MdgenError, ValueError):
    """A model, tokenizer, latent or manifest file that is corrupt, truncated or does not fit its use."""


class MissingFileError(MdgenError, FileNotFoundError):
    """An input that an earlier stage (or the user) must provide is not there."""


class BusyError(MdgenError, RuntimeError):
    """Another process is writing the same output folder."""


class OutputPathError(MdgenError, ValueError):
    """An output path that would destroy something mdgen did not create (a folder where a file goes, or the reverse)."""


class DivergedError(MdgenError, FloatingPointError):
    """A training run whose loss became non-finite: a recipe problem (learning rate, clipping), not a bug."""
