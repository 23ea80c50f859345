"""Provenance (model, version, tiling, ... as the caller gives them) as JSON text and as 80-character MRC labels."""
from __future__ import annotations

import json
from typing import Any

MRC_LABEL_CHARS = 80
MRC_MAX_LABELS = 10
LABEL_PREFIX = "provenance "


def to_json(provenance: dict[str, Any]) -> str:
    """Compact one-line ASCII JSON (non-JSON values written as text)."""
    if not isinstance(provenance, dict):
        raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}")
    return json.dumps(provenance, separators=(",", ":"), ensure_ascii=True, default=str)


def from_json(text: Any) -> dict[str, Any] | None:
    """The dict written by :func:`to_json`, or None if ``text`` is not one."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _value_text(value: Any) -> str:
    """Plain text for strings that cannot be mistaken for JSON, compact JSON for everything else."""
    if isinstance(value, str) and value.isascii() and value.isprintable():
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)


def to_labels(provenance: dict[str, Any]) -> list[bytes]:
    """One label per item, ``provenance key=value``; a label over 80 characters is cut and ends in '...'."""
    labels = []
    for key, value in to_dict(provenance).items():
        text = f"{LABEL_PREFIX}{key}={_value_text(value)}".encode("ascii", "backslashreplace").decode("ascii")
        if len(text) > MRC_LABEL_CHARS:
            text = text[: MRC_LABEL_CHARS - 3] + "..."
        labels.append(text.encode("ascii"))
    return labels


def to_dict(provenance: dict[str, Any]) -> dict[str, Any]:
    """``provenance`` as it reads back from JSON (keys as text, tuples as lists, other objects as text)."""
    return json.loads(to_json(provenance))


def is_label(label: bytes) -> bool:
    return label.startswith(LABEL_PREFIX.encode("ascii"))


def from_labels(labels: list[bytes]) -> dict[str, Any] | None:
    """Provenance items read back from MRC labels; a cut value comes back as its text."""
    out: dict[str, Any] = {}
    for label in labels:
        if not is_label(label):
            continue
        key, sep, text = label.decode("ascii", "replace")[len(LABEL_PREFIX):].partition("=")
        if not sep:
            continue
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out or None


def merge_labels(source: list[bytes], provenance: dict[str, Any] | None) -> list[bytes]:
    """Labels for an output: the source's (older provenance replaced), then the provenance, at most ten.

    When they do not all fit, the first source label (the file's origin) and the latest ones are kept.
    """
    if not provenance:
        return source[:MRC_MAX_LABELS]
    prov = to_labels(provenance)[: MRC_MAX_LABELS - (1 if source else 0)]
    kept = [lab for lab in source if not is_label(lab)]
    room = MRC_MAX_LABELS - len(prov)
    if len(kept) > room:
        kept = kept[:1] + (kept[len(kept) - room + 1:] if room > 1 else [])
    return kept + prov
