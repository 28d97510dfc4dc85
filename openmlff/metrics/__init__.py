"""Force metrics of a model against reference data (global, element, atom, frame, conformation cluster).

After Wang et al., J. Chem. Phys. 159, 035101 (2023); formulas in the docstrings of
`force_metrics` and `conformations`. Plain functions on numpy arrays, plus one accumulator for
evaluating many frames batch by batch, and `report.metrics_report`, the metrics JSON of a model.
"""

from .conformations import (
    assign_clusters, cluster_conformations, cluster_force_metrics, conformation_descriptor, silhouette_score,
)
from .force_metrics import (
    FNM_KEYS, FORCE_KEYS, ForceErrorAccumulator, atom_force_metrics, element_force_metrics, frame_force_metrics,
    global_force_metrics, metric_units,
)
from .report import add_conformation_clusters, metrics_report

__all__ = [
    "FNM_KEYS", "FORCE_KEYS", "ForceErrorAccumulator", "add_conformation_clusters", "assign_clusters",
    "atom_force_metrics", "cluster_conformations", "cluster_force_metrics", "conformation_descriptor",
    "element_force_metrics", "frame_force_metrics", "global_force_metrics", "metric_units", "metrics_report",
    "silhouette_score",
]
