"""Imports that need care: openmmtorch logs a `simtk` deprecation warning on import."""

from __future__ import annotations

import logging
import warnings


class _DropSimtkWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "simtk" not in record.getMessage()


def import_openmmtorch():
    """Import and return the openmmtorch module without its `simtk` deprecation warning."""
    root = logging.getLogger()
    drop = _DropSimtkWarning()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*simtk.*")
            import openmmtorch
    finally:
        root.removeFilter(drop)
    return openmmtorch
