"""How fast the command line answers: `openmlff --help`, a command's `--help`, `campaign status`, reading a run.

Each is a fresh process (`python -m openmlff ...`), best of --repeats wall times, with the modules it imported
that matter (torch, OpenMM). Target (issue 33): `--help` and `campaign status` under 0.5 s, neither importing
torch or OpenMM. `--campaign DIR` times `campaign status DIR` and reading one of its runs (summary.json,
state.csv, the DCD frames) the way `campaign status` and `analyze` do.

    python benchmarks/cli_startup.py [--campaign results/six_models/campaign] [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from pages import processor, result_page  # benchmarks/pages.py

PROBE = "import sys\n{code}\nprint(' '.join(m for m in ('torch', 'openmm') if m in sys.modules) or '-')\n"


def timed(code: str, repeats: int) -> tuple[float, str]:
    """Best wall time (s) of a fresh interpreter running `code`, and the heavy modules it imported."""
    best, heavy = float("inf"), ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True)
        best = min(best, time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"failed: {code}\n{done.stderr}")
        heavy = done.stdout.strip().splitlines()[-1]
    return best, heavy


def cli(*argv: str) -> str:
    return ("import contextlib, io\nfrom openmlff.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main({list(argv)!r})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--campaign", type=Path, default=None, help="a campaign directory to time `campaign status` on")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rows = [("python -c pass (the interpreter alone)", "pass"), ("openmlff --help", cli("--help")),
            ("openmlff simulate --help", cli("simulate", "--help")),
            ("openmlff train --help", cli("train", "--help"))]
    if args.campaign is not None:
        run = next(iter(sorted((args.campaign / "runs").iterdir())))
        rows += [(f"openmlff campaign status {args.campaign}", cli("campaign", "status", str(args.campaign))),
                 ("read one run: summary, state.csv, DCD frames",
                  "from openmlff.md.rundir import RunDirectory\nfrom openmlff.md.state_table import read_state_csv\n"
                  "from openmlff.md.dcd import read_dcd_frames\n"
                  f"d = RunDirectory({str(run)!r}); d.read_summary(); read_state_csv(d.state_csv); "
                  "read_dcd_frames(d.trajectory)")]
    print(f"{processor()}; best of {args.repeats} fresh processes; wall time in s\n")
    print("| what | s | torch or OpenMM imported |")
    print("|---|---|---|")
    for label, code in rows:
        seconds, heavy = timed(code, args.repeats)
        print(f"| {label} | {seconds:.3f} | {heavy} |")
    return 0


if __name__ == "__main__":
    with result_page("cli_startup", "How fast the command line answers", markdown=True):
        code = main()
    sys.exit(code)
