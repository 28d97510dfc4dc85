"""Shared figure helpers: matplotlib Figures drawn off-screen (Agg canvas, no pyplot state) and saved as PNG."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..core.atomic_io import atomic_write

DPI = 130
#: Colours of the common elements (CPK-like, darkened so that white hydrogen shows on white paper).
ELEMENT_COLOURS = {"H": "#8c8c8c", "C": "#303030", "N": "#3050f8", "O": "#e02020", "F": "#50b050", "S": "#d4a017",
                   "P": "#ff8000", "Cl": "#1fb01f"}
DEFAULT_COLOUR = "#9467bd"


def new_figure(width_in: float = 7.0, height_in: float = 4.5) -> Figure:
    """A Figure on an Agg canvas (works without a display), laid out with constrained layout."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path) -> Path:
    """Write the figure as a PNG (atomically) and return its path."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def element_colour(symbol: str) -> str:
    return ELEMENT_COLOURS.get(symbol, DEFAULT_COLOUR)
