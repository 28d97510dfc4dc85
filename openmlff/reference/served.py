"""Models served from another Python environment: a calculator that lives where its code can be installed (mace-torch
pins e3nn 0.4.4, torchmd-net wants setuptools >= 82; openmlff's environment has neither) and answers over ASE's
socket protocol (i-PI), as mlipx serves models from separate environments.

`served_calculator(python, target, options)` returns ASE's SocketIOCalculator, which starts `python
socket_client.py ...` (the far end, reference/socket_client.py, which imports nothing from openmlff) on the first
calculation and talks to it over a unix socket of this process; the client ends when the socket closes: when its
owner is collected (`close_with`), at exit, or when this process dies. Only positions travel per call (in Bohr; energies in Hartree, converted back by
ASE), so the atoms are fixed at launch. Measured round trip: benchmarks/served_models.py.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import tempfile
import weakref
from pathlib import Path

from ..core.errors import InputError

CLIENT = Path(__file__).with_name("socket_client.py")
#: Seconds openmlff waits for the served calculator's answer (its first call also starts the environment and loads
#: the model).
TIMEOUT_S = 600.0
_COUNTER = itertools.count()
_VERSIONS: dict[tuple[str, str], dict] = {}


def check_python(python) -> str:
    """The interpreter path, or InputError naming it when it is not an executable file."""
    path = Path(str(python)).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise InputError(f"option python: {path}: not an executable Python interpreter (the environment that serves "
                         "the model, e.g. .venv-mace/bin/python from protocols/backend_envs.sh)")
    return str(path.absolute())


def served_calculator(python, target: str, options: dict, threads: int = 1):
    """ASE's SocketIOCalculator serving `target` (MODULE:CLASS or openmm-ml:NAME) with `options` from `python`."""
    from ase.calculators.socketio import SocketIOCalculator

    python = check_python(python)
    name = f"openmlff_{os.getpid()}_{next(_COUNTER)}"

    log = Path(tempfile.gettempdir()) / f"{name}.log"

    def launch(atoms, properties=None, port=None, unixsocket=None):
        command = [python, str(CLIENT), "--target", target, "--options", json.dumps(options),
                   "--numbers", ",".join(str(int(z)) for z in atoms.numbers), "--unixsocket", unixsocket,
                   "--threads", str(int(threads))]
        with open(log, "wb") as err:  # the backend's warnings stay out of openmlff's output; errors are read back
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err,
                                    env={**os.environ, "OMP_NUM_THREADS": str(threads)})

    Path(f"/tmp/ipi_{name}").unlink(missing_ok=True)  # ASE binds /tmp/ipi_NAME
    calculator = SocketIOCalculator(unixsocket=name, timeout=TIMEOUT_S, launch_client=launch)
    calculator.openmlff_log = log
    return calculator


def close_with(owner, calculator) -> None:
    """Close the served `calculator` (its environment's process ends) when `owner` is collected, or at exit."""
    weakref.finalize(owner, calculator.close)


def failure_detail(calculator) -> str:
    """The served environment's last error line (its log), for a failure's one-line message; '' when not served."""
    log = getattr(calculator, "openmlff_log", None)
    if log is None or not Path(log).is_file():
        return ""
    lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return f"; the served environment said: {(errors or lines or ['nothing'])[-1].strip()[:300]} (log {log})"


def served_versions(python, target: str) -> dict:
    """The versions behind `target` in the environment of `python` (asked once per process)."""
    key = (check_python(python), target)
    if key not in _VERSIONS:
        done = subprocess.run([key[0], str(CLIENT), "--target", target, "--versions"], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise InputError(f"option python: {key[0]} could not run openmlff's socket client ({last})")
        _VERSIONS[key] = json.loads(done.stdout)
    return _VERSIONS[key]
