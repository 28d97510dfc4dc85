"""Where a compiled model's forward + forces spends its time, next to the TorchScript module's (issue 34: the profile
behind a missed speed target).

For each architecture (untrained, default CPU size, aspirin start), torch.profiler records --calls calls of forward
+ autograd.grad of the TorchScript file and of the model compiled by Inductor (potentials/compiled.py), after a
warm-up; the table lists the operators and kernels with the most self CPU time, and the line above it the share
spent in dynamo's guard checks and graph-break glue (the Python between compiled graphs).

    python benchmarks/compiled_profile.py [--architectures et] [--calls 50] [--top 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_speed import export_untrained  # noqa: E402
from pages import result_page  # noqa: E402

from openmlff.core.threads import set_threads  # noqa: E402
from openmlff.core.versions import processor_name  # noqa: E402
from openmlff.models import ARCHITECTURES  # noqa: E402
from openmlff.potentials.compiled import CompiledModelComputation  # noqa: E402
from openmlff.potentials.computation import TorchModelComputation  # noqa: E402
from openmlff.structures import load_structure  # noqa: E402


def profile(computation, positions_nm, calls: int):
    for _ in range(10):
        computation.energy_and_forces(positions_nm)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            computation.energy_and_forces(positions_nm)
    return prof.key_averages()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    set_threads(1)
    print(f"# forward + forces profiles, {processor_name()}, torch {torch.__version__}, 1 thread, aspirin, "
          f"{args.calls} calls after 10 warm-up calls; self CPU ms per call")
    aspirin = load_structure("aspirin")
    x = aspirin.positions_angstrom / 10.0
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in args.architectures:
            model = export_untrained(architecture, aspirin.atomic_numbers, Path(tmp) / f"{architecture}.pt")
            for label, computation in (("torchscript", TorchModelComputation(model)),
                                       ("compiled", CompiledModelComputation(model, device="cpu"))):
                events = profile(computation, x, args.calls)
                total = sum(e.self_cpu_time_total for e in events) / args.calls / 1000
                glue = sum(e.self_cpu_time_total for e in events
                           if any(k in e.key for k in ("Torch-Compiled Region", "TorchDynamo", "CompiledFunction",
                                                       "GuardManager", "Graph break"))) / args.calls / 1000
                print(f"\n## {architecture}, {label}: {total:.2f} ms self CPU per call"
                      + (f"; dynamo regions and glue {glue:.2f} ms" if label == "compiled" else ""))
                rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]
                for e in rows:
                    print(f"  {e.self_cpu_time_total / args.calls / 1000:7.3f} ms  {e.count // args.calls:>5} x  "
                          f"{e.key[:90]}")
    return 0


if __name__ == "__main__":
    with result_page("compiled_profile", "Forward + forces profiles: TorchScript and Inductor-compiled"):
        code = main()
    sys.exit(code)
