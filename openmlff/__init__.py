"""openmlff: machine-learning force fields in OpenMM.

Train an MLFF on quantum-chemistry data, export it to TorchScript, run MD with it in OpenMM,
and relate its force errors to the stability of its trajectories (Wang et al., JCP 159, 035101, 2023).
The data flow and conventions are described in DESIGN.md.
"""

__version__ = "0.1.0"
