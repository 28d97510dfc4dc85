"""Reports: CSV tables with units in the column names, PNG figures, and the files of `openmlff metrics` and
`openmlff analyze`. Figures are drawn with matplotlib off-screen (Agg canvas), so no display is needed."""

from .analysis_outputs import ANALYSIS_JSON, DEFAULT_ANALYSIS_FOLDER, write_run_analysis
from .analysis_plots import write_analysis_plots
from .metrics_outputs import TABLE_NAMES, metrics_tables, write_metrics_tables
from .metrics_plots import PLOT_NAMES, write_metrics_plots
from .tables import read_table, write_table

__all__ = [
    "ANALYSIS_JSON", "DEFAULT_ANALYSIS_FOLDER", "PLOT_NAMES", "TABLE_NAMES",
    "metrics_tables", "read_table", "write_analysis_plots", "write_metrics_plots", "write_metrics_tables",
    "write_run_analysis", "write_table",
]
