"""openmlff: machine-learning force fields in OpenMM.

Train an MLFF on quantum-chemistry data, export it to TorchScript, run MD with it in OpenMM,
and relate its force errors to the stability of its trajectories (Wang et al., JCP 159, 035101, 2023).
The layers, data flow and conventions are described in docs/architecture.md.
"""

from .core.threads import configure_process as _configure_process

_configure_process()  # OMP_WAIT_POLICY=PASSIVE before torch starts OpenMP (see openmlff.core.threads)

__version__ = "0.1.2"
