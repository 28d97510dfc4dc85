"""Writing a run analysis (openmlff.analysis.analyze_run) to disk: analysis.json, CSV tables and, if asked, PNGs."""

from __future__ import annotations

from pathlib import Path

from ..core.atomic_io import atomic_write_json
from .analysis_plots import write_analysis_plots
from .tables import write_table

ANALYSIS_JSON = "analysis.json"
DEFAULT_ANALYSIS_FOLDER = "analysis"


def write_run_analysis(analysis, out_dir, plots: bool = False) -> dict[str, list[Path]]:
    """Write `analysis` (a RunAnalysis) into out_dir: the tables as CSV, the figures when `plots`, then
    analysis.json listing them (file names relative to out_dir). Returns {"json", "tables", "plots": paths}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = [write_table(out_dir / name, columns) for name, columns in analysis.tables.items()]
    figures = write_analysis_plots(analysis.document, analysis.tables, out_dir) if plots else []
    document = dict(analysis.document, files={"tables": [p.name for p in tables], "plots": [p.name for p in figures]})
    json_path = atomic_write_json(out_dir / ANALYSIS_JSON, document)
    return {"json": [json_path], "tables": tables, "plots": figures}
