"""openmlff in other packages' hands: openmm_ml.py, the openmm-ml plugin (MLPotential('openmlff')), and
ase_calculator.py, an ASE calculator of an exported model. (Other codes' models in openmlff's hands are
potentials/; ASE calculators as reference methods are reference/ase_bridge.py.)"""
