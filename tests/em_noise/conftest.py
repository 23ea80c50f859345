"""Shared fixtures for the em-noise tests."""
from __future__ import annotations

import builtins

import pytest


@pytest.fixture
def no_rosettasciio(monkeypatch):
    """Imports of rosettasciio fail, as on an install without the ``formats`` extra."""
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("rsciio"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
