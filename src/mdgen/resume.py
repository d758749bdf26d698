"""Resume or start fresh: one rule for every run that can be continued.

A run that can be continued (DiT training's `last.ckpt`, the tokenizer fit's `resume.pt`, the sample set's
partial folder) stores beside its state a *fingerprint*: a plain dict of what decides its result (settings,
hashes of its input files and starting weights). A later run continues that state only when its own
fingerprint is equal; otherwise it starts fresh, and the reason it gives names the entries that differ.
What may change without changing the result (how often to save, which device) is left out by the owner.
"""
from __future__ import annotations

from typing import Any

_MISSING = object()


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names of the entries that differ between two fingerprints (nested dicts compared entry by entry)."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = saved.get(key, _MISSING), current.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif _normal(a) != _normal(b):
            out.append(f"{prefix}{key}")
    return out


def _normal(v: Any) -> Any:
    # a fingerprint that went through JSON or torch.save comes back with lists where tuples went in
    return [_normal(x) for x in v] if isinstance(v, (list, tuple)) else v


def decide(saved: Any, current: dict, where: str) -> tuple[bool, str]:
    """(continue?, why) for a state at `where` whose stored fingerprint is `saved` (None: no state there)."""
    if saved is None:
        return False, f"nothing to resume at {where}"
    if not isinstance(saved, dict):
        return False, f"{where} holds no fingerprint of its run (another tool or mdgen version wrote it)"
    diff = differences(saved, current)
    if diff:
        return False, f"{where} was made by a run with other settings or inputs (differs in: {', '.join(diff)})"
    return True, f"resuming from {where}"
