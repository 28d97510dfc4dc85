"""What a run's molecule sits in: vacuum, a periodic box, or water (mixed ML/MM); docs/architecture.md
"Periodic and solvated runs" has the details.

- vacuum: the molecule alone, no box (its System is the potential's own).
- periodic: a structure file with a box (PDB CRYST1) and no solvent: the model on every atom, with OpenMM's
  box handed to it (its neighbour list takes minimum images) and periodic boundary conditions.
- solvated: water and ions around the molecule, from the structure file (residues HOH/WAT/... and
  monatomic ions are solvent, everything else is the molecule) or made by `--solvate PADDING_NM`
  (OpenMM's Modeller, TIP3P-FB, neutralised with Na+/Cl-; the new water relaxed around the fixed molecule).
  openmm-ml's `createMixedSystem` (mechanical embedding): the model on the molecule, amber14 (ff14SB) +
  TIP3P-FB (rigid water) on the rest, PME; amber14's terms inside the molecule removed, its charges and
  Lennard-Jones to the solvent kept. With the potential `amber14` the same box is all MM (the classical control).

The molecule keeps openmlff's masses (those of its vacuum runs). The same inputs give the same start, bit for
bit: Modeller's random ion placement is seeded with the run's seed, the solvent relaxation runs on the CPU
platform with DeterministicForces (PME sums otherwise differ in the last bits between Contexts) and is kept in
solvated_start.npz (its SHA-256 checked on resume), which later sessions, on any machine, start from; periodic
runs ask every platform that has it for DeterministicForces, for the bit-identical resume the vacuum runs have.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from ..core import elements
from ..core.atomic_io import atomic_write_stream
from ..core.errors import InputError
from ..core.units import NM_IN_ANGSTROM
from .rundir import array_sha256

#: OpenMM force field files of the solvent and of the molecule's MM terms (ML/MM coupling, the amber14 control).
SOLVENT_FORCE_FIELD = ("amber14-all.xml", "amber14/tip3pfb.xml")
#: Modeller's water geometry for TIP3P-FB (a three-site model like TIP3P).
WATER_MODEL = "tip3p"
#: Residue names read as water, and as monatomic ions, in a structure file.
WATER_RESIDUES = frozenset({"HOH", "WAT", "TIP3", "TIP", "SOL", "H2O", "T3P"})
ION_RESIDUES = frozenset({"NA", "CL", "K", "MG", "CA", "ZN", "LI", "CS", "RB", "F", "BR", "I", "NA+", "CL-", "K+"})
#: PME real-space cutoff when the config sets none, in nm.
DEFAULT_NONBONDED_CUTOFF_NM = 1.0
#: Monte Carlo barostat: steps between box moves when the config sets none.
DEFAULT_BAROSTAT_INTERVAL_STEPS = 25
INSTALL_HINT = "pip install 'openmlff[openmm-ml]'"


@dataclass
class Environment:
    """The atoms a run simulates: the molecule (ml_atoms of the full topology) and whatever surrounds it.

    topology / positions_angstrom / atomic_numbers: the whole system (the molecule alone in vacuum);
    ml_atoms: the molecule's atoms in it, in the model's order; box_nm (3, 3): box vectors as rows, or None.
    """

    kind: str  # "vacuum", "periodic" or "solvated"
    topology: app.Topology
    positions_angstrom: np.ndarray
    atomic_numbers: np.ndarray
    ml_atoms: np.ndarray
    box_nm: np.ndarray | None = None
    padding_nm: float | None = None
    #: How the solvent made by --solvate was relaxed (energies in kJ/mol), else None.
    solvent_relaxation: dict | None = None
    #: SHA-256 of what a --solvate start depends on (solvated_start.npz is reused only for the same), else None.
    inputs_sha256: str | None = None

    @property
    def periodic(self) -> bool:
        return self.box_nm is not None

    @property
    def solvated(self) -> bool:
        return self.kind == "solvated"

    def record(self, config) -> dict | None:
        """run.json's "environment" block (None in vacuum, as in runs written before this module)."""
        if self.kind == "vacuum":
            return None
        residues = [r.name.upper() for r in self.topology.residues()]
        return {
            "kind": self.kind,
            "n_atoms": int(len(self.atomic_numbers)),
            "atomic_numbers": self.atomic_numbers.tolist(),
            "ml_atoms": self.ml_atoms.tolist(),
            "box_nm": self.box_nm.tolist(),
            "positions_angstrom_sha256": array_sha256(self.positions_angstrom),
            "solvate_padding_nm": self.padding_nm,
            "solvent_relaxation": self.solvent_relaxation,
            "n_waters": sum(name in WATER_RESIDUES for name in residues),
            "n_ions": sum(name in ION_RESIDUES for name in residues),
            "force_field": list(SOLVENT_FORCE_FIELD) if self.solvated else None,
            "water_model": "TIP3P-FB (rigid, SETTLE)" if self.solvated else None,
            "ml_mm_coupling": ("openmm-ml createMixedSystem, mechanical embedding: amber14 charges and Lennard-Jones "
                               "between the molecule and the solvent, amber14 terms inside the molecule removed")
            if self.solvated else None,
            "nonbonded": f"PME, cutoff {cutoff_nm(config)} nm" if self.solvated else "model only (minimum images)",
            "pressure_bar": config.pressure_bar,
            "barostat_interval_steps": barostat_interval(config) if config.pressure_bar is not None else None,
        }

    def structure(self, name: str = "system"):
        """The whole system as an openmlff Structure (topology.pdb and the trajectory are written from it)."""
        from ..structures.builtin import Structure

        return Structure(name=name, atomic_numbers=self.atomic_numbers, positions_angstrom=self.positions_angstrom,
                         topology=self.topology)


def cutoff_nm(config) -> float:
    return float(config.nonbonded_cutoff_nm or DEFAULT_NONBONDED_CUTOFF_NM)


def barostat_interval(config) -> int:
    return int(config.barostat_interval_steps or DEFAULT_BAROSTAT_INTERVAL_STEPS)


def prepare_environment(structure, config, where: str = "structure", saved=None) -> Environment:
    """The Environment of a run from its starting structure (an openmlff Structure) and config.

    A box in the structure's topology makes the run periodic; solvent residues in it make it solvated;
    config.solvate_padding_nm solvates a molecule that has no box (a molecule read without residues gets
    amber14's, as `--model amber14` finds them). saved: a solvated_start.npz written by `save_solvated_start`
    for the same inputs, whose relaxed positions are used instead of relaxing again.
    """
    topology, positions = structure.topology, np.asarray(structure.positions_angstrom, dtype=np.float64)
    zs = np.asarray(structure.atomic_numbers, dtype=np.int64)
    box = topology.getPeriodicBoxVectors()
    solvent = np.array([a.residue.name.upper() in WATER_RESIDUES | ION_RESIDUES for a in topology.atoms()], bool)
    if config.solvate_padding_nm is not None:
        if box is not None or solvent.any():
            raise InputError(f"{where}: --solvate was given, but the structure already has "
                             f"{'a box (CRYST1)' if box is not None else 'solvent'}; give one or the other")
        return _solvate(structure, config, saved)
    if box is None:
        if solvent.any():
            raise InputError(f"{where}: holds solvent residues ({int(solvent.sum())} atoms) but no box (CRYST1 record); "
                             "a solvated system needs its periodic box")
        if config.pressure_bar is not None:
            raise InputError("pressure_bar (NPT) needs a periodic system: a structure with a box (CRYST1) or --solvate")
        return Environment("vacuum", topology, positions, zs, np.arange(len(zs)))
    box_nm = np.array([v.value_in_unit(unit.nanometer) for v in box], dtype=np.float64)
    if not (np.isfinite(box_nm).all() and np.all(np.diag(box_nm) > 0)):
        raise InputError(f"{where}: the box (CRYST1) must have positive lengths, got {box_nm.tolist()} nm")
    ml_atoms = np.flatnonzero(~solvent)
    if len(ml_atoms) == 0:
        raise InputError(f"{where}: every residue is solvent; there is no molecule for the model")
    kind = "solvated" if solvent.any() else "periodic"
    positions = _whole_molecules(topology, positions, box_nm)
    if kind == "solvated" and np.any(np.diff(ml_atoms) != 1):
        raise InputError(f"{where}: the molecule's atoms must come before or after the solvent in one block; "
                         f"solvent residues interrupt it at atom {int(ml_atoms[np.flatnonzero(np.diff(ml_atoms) != 1)[0]]) + 1}")
    return Environment(kind, topology, positions, zs, ml_atoms, box_nm)


def _whole_molecules(topology: app.Topology, positions_angstrom: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
    """Positions with every molecule whole (mdtraj.make_molecules_whole along the topology's bonds): a file may
    hold a molecule wrapped into the box in pieces; OpenMM then keeps each atom's path continuous, so the model,
    the rigid waters and the monitor all see whole molecules."""
    import mdtraj

    if topology.getNumBonds() == 0:
        return positions_angstrom
    traj = mdtraj.Trajectory(positions_angstrom[None] / NM_IN_ANGSTROM, mdtraj.Topology.from_openmm(topology))
    traj.unitcell_vectors = box_nm[None]
    whole = traj.make_molecules_whole(inplace=False)
    return np.asarray(whole.xyz[0], dtype=np.float64) * NM_IN_ANGSTROM if not np.allclose(
        whole.xyz, traj.xyz) else positions_angstrom


def _solvate(structure, config, saved=None) -> Environment:
    """The molecule in a cube of TIP3P-FB water (OpenMM's Modeller: edge = the molecule's diameter +
    solvate_padding_nm, at least twice the padding)."""
    topology = _with_residues(structure)
    force_field = app.ForceField(*SOLVENT_FORCE_FIELD)
    modeller = app.Modeller(topology, unit.Quantity(structure.positions_angstrom / NM_IN_ANGSTROM, unit.nanometer))
    random_state = random.getstate()
    random.seed(int(config.seed))  # Modeller picks the waters that become ions at random
    try:
        modeller.addSolvent(force_field, model=WATER_MODEL, padding=config.solvate_padding_nm * unit.nanometer,
                            neutralize=True)
    except ValueError as exc:  # "No template found for residue 1 (UNL)..."
        raise InputError(f"--solvate needs amber14 (ff14SB) parameters for the molecule's ML/MM coupling: "
                         f"{str(exc).split('  For more')[0]} (peptides and proteins only)") from None
    finally:
        random.setstate(random_state)
    positions = np.asarray(modeller.getPositions().value_in_unit(unit.angstrom), dtype=np.float64)
    zs = np.array([a.element.atomic_number for a in modeller.topology.atoms()], dtype=np.int64)
    box = np.array([v.value_in_unit(unit.nanometer) for v in modeller.topology.getPeriodicBoxVectors()])
    n = len(structure.atomic_numbers)
    if not np.array_equal(zs[:n], structure.atomic_numbers):  # Modeller keeps the solute first, in order
        raise RuntimeError("Modeller.addSolvent reordered the molecule's atoms")
    environment = Environment("solvated", modeller.topology, positions, zs, np.arange(n), box,
                              float(config.solvate_padding_nm))
    environment.inputs_sha256 = _solvation_inputs_sha256(structure, config)
    environment.positions_angstrom, environment.solvent_relaxation = (
        _read_solvated_start(saved, environment) or _relax_solvent(environment, config))
    return environment


def _solvation_inputs_sha256(structure, config) -> str:
    """What the solvated start depends on: the molecule, the padding, the seed, the cutoff, the force field."""
    document = {"atomic_numbers": np.asarray(structure.atomic_numbers).tolist(),
                "positions_sha256": array_sha256(structure.positions_angstrom),
                "padding_nm": config.solvate_padding_nm, "seed": config.seed, "cutoff_nm": cutoff_nm(config),
                "force_field": SOLVENT_FORCE_FIELD, "openmm": openmm.__version__}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def save_solvated_start(path, environment: Environment) -> None:
    """Keep a --solvate run's relaxed start (positions Å, float64) beside its run.json (atomic; no pickles)."""
    atomic_write_stream(path, lambda handle: np.savez(
        handle, positions_angstrom=environment.positions_angstrom, atomic_numbers=environment.atomic_numbers,
        inputs_sha256=np.array(environment.inputs_sha256),
        solvent_relaxation=np.array(json.dumps(environment.solvent_relaxation))))


def _read_solvated_start(path, environment: Environment):
    """(positions, relaxation record) from a solvated_start.npz of the same inputs, else None (no file, or
    another molecule, padding or seed: that run's record check then names the difference)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            positions = np.asarray(data["positions_angstrom"], dtype=np.float64)
            same = (str(data["inputs_sha256"]) == environment.inputs_sha256
                    and np.array_equal(data["atomic_numbers"], environment.atomic_numbers))
            relaxation = json.loads(str(data["solvent_relaxation"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a solvated start written by openmlff ({exc})") from None
    if not same or positions.shape != environment.positions_angstrom.shape:
        return None
    return positions, relaxation


def _relax_solvent(environment: Environment, config) -> tuple[np.ndarray, dict]:
    """Minimise the new solvent around the fixed molecule (amber14 + TIP3P-FB, the molecule's masses 0, which
    OpenMM's LocalEnergyMinimizer keeps in place): Modeller's waters overlap and would heat the box to thousands
    of K in the first 0.1 ps. CPU platform, one thread, deterministic forces: the same inputs relax alike."""
    system = _mm_system(environment, config)
    for atom in environment.ml_atoms:
        system.setParticleMass(int(atom), 0.0)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1", "DeterministicForces": "true"})
    context.setPositions(environment.positions_angstrom / NM_IN_ANGSTROM)
    before = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    openmm.LocalEnergyMinimizer.minimize(context)
    state = context.getState(getEnergy=True, getPositions=True)
    positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom), dtype=np.float64)
    return positions, {"method": "LocalEnergyMinimizer on amber14 + TIP3P-FB, molecule fixed",
                       "mm_energy_before_kJ_per_mol": float(before),
                       "mm_energy_after_kJ_per_mol": float(state.getPotentialEnergy().value_in_unit(
                           unit.kilojoule_per_mole))}


def _with_residues(structure) -> app.Topology:
    """The structure's topology, or amber14's residues for a molecule read without them (a dataset frame)."""
    if any(r.name != "UNL" for r in structure.topology.residues()):
        return structure.topology
    from ..potentials.classical import Amber14

    return Amber14().topology(structure.atomic_numbers, structure.positions_angstrom)


#: Under NPT the box must stay above twice the PME cutoff while it fluctuates: this much room is asked for.
NPT_BOX_MARGIN = 1.1


def check_box_for_cutoff(environment: Environment, config) -> None:
    """InputError when the box's shortest height is not above twice the PME cutoff (OpenMM's limit), with 10 %
    to spare under NPT, where the barostat shrinks the box (OpenMM stops the run when it falls below)."""
    if not environment.solvated:
        return
    box = environment.box_nm
    volume = abs(np.linalg.det(box))
    heights = [volume / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3])) for k in range(3)]
    needed = 2 * cutoff_nm(config) * (NPT_BOX_MARGIN if config.pressure_bar is not None else 1.0)
    if min(heights) <= needed:
        raise InputError(
            f"the box is {min(heights):.3f} nm across, too small for a PME cutoff of {cutoff_nm(config)} nm: it must "
            f"exceed {needed:.2f} nm (twice the cutoff{', and 10 % to spare under NPT' if config.pressure_bar else ''}); "
            "give a larger --solvate padding (Modeller's box edge is the molecule's diameter + padding, at least "
            "2 x padding) or a smaller --nonbonded-cutoff-nm")


def build_environment_system(potential, environment: Environment, config) -> openmm.System:
    """The System of a periodic or solvated run (see the module docstring), with the barostat when asked."""
    name = getattr(potential, "name", "")
    if getattr(potential, "kind", "") == "mlff":
        system = _model_system(potential, environment, config)
    elif name == "amber14" and environment.solvated:
        system = _mm_system(environment, config)
    else:
        raise InputError(f"a {environment.kind} run needs an exported model (or amber14 in water), not {name!r}")
    for atom, mass in zip(environment.ml_atoms, elements.masses(environment.atomic_numbers[environment.ml_atoms])):
        system.setParticleMass(int(atom), float(mass))
    if config.pressure_bar is not None:
        barostat = openmm.MonteCarloBarostat(config.pressure_bar * unit.bar, config.temperature_K * unit.kelvin,
                                             barostat_interval(config))
        barostat.setRandomNumberSeed(config.openmm_seed)
        system.addForce(barostat)
    return system


def _mm_system(environment: Environment, config) -> openmm.System:
    """amber14 + TIP3P-FB on every atom: PME, rigid water, flexible molecule, centre-of-mass motion removed."""
    return app.ForceField(*SOLVENT_FORCE_FIELD).createSystem(
        environment.topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_nm(config) * unit.nanometer,
        constraints=None, rigidWater=True, removeCMMotion=True)


def _model_system(potential, environment: Environment, config) -> openmm.System:
    """The model through openmm-ml's MLPotential('openmlff'): on every atom (periodic) or mixed (solvated)."""
    try:
        from openmmml import MLPotential
    except ImportError:
        raise InputError(f"periodic and solvated runs use openmm-ml, which is not installed: {INSTALL_HINT}") from None
    ml = MLPotential("openmlff", modelPath=str(potential.path))
    options = {"backend": config.backend}
    if config.torch_properties:
        options["torchProperties"] = config.torch_properties
    if environment.kind == "periodic":
        return ml.createSystem(environment.topology, removeCMMotion=True, **options)
    return ml.createMixedSystem(environment.topology, _mm_system(environment, config),
                                environment.ml_atoms.tolist(), embedding="mechanical", **options)


def platform_properties(platform: openmm.Platform, properties: dict, environment: Environment) -> dict:
    """The run's platform properties, with DeterministicForces in periodic runs (PME sums in a fixed order)."""
    if environment.periodic and "DeterministicForces" in platform.getPropertyNames():
        return {**properties, "DeterministicForces": "true"}
    return properties


def degrees_of_freedom(system: openmm.System) -> int:
    """3 per particle with mass, less one per constraint, less 3 for a centre-of-mass motion remover."""
    moving = sum(system.getParticleMass(i).value_in_unit(unit.dalton) > 0 for i in range(system.getNumParticles()))
    remover = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    return int(3 * moving - system.getNumConstraints() - (3 if remover else 0))
