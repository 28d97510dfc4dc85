"""Force metrics of a model against reference data (global, element, atom, frame, conformation cluster).

After Wang et al., J. Chem. Phys. 159, 035101 (2023); formulas in the docstrings of
`force_metrics` and `conformations`. Plain functions on numpy arrays, plus one accumulator for
evaluating many frames batch by batch.
"""

from .conformations import (
    assign_clusters,
    cluster_conformations,
    cluster_force_metrics,
    conformation_descriptor,
    silhouette_score,
)
from .force_metrics import (
    FNM_KEYS,
    FORCE_KEYS,
    ForceErrorAccumulator,
    atom_force_metrics,
    element_force_metrics,
    frame_force_metrics,
    global_force_metrics,
    jsonable,
    metric_units,
)

__all__ = [
    "FNM_KEYS",
    "FORCE_KEYS",
    "ForceErrorAccumulator",
    "assign_clusters",
    "atom_force_metrics",
    "cluster_conformations",
    "cluster_force_metrics",
    "conformation_descriptor",
    "element_force_metrics",
    "frame_force_metrics",
    "global_force_metrics",
    "jsonable",
    "metric_units",
    "silhouette_score",
]
