"""Why a model has no compiled form."""

from __future__ import annotations


class NotCompiled(Exception):
    """Part of a fitted model the compiler does not cover: the scikit-learn pipeline answers instead."""
