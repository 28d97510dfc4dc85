"""Neighbour search speed: all_pairs (N x N) against the cell list, by system size.

Systems are random clouds at liquid water's atom density (0.1 atoms/Å^3, about 3 atoms per
30 Å^3 water molecule) in a cube, as one molecule; the periodic columns use that cube as the box.
Prints a table of ms per call of `neighbor_pairs` (the TorchScript-compiled function, as exported
models run it; --eager for plain Python) and the ratio, so the quadratic and linear scaling show.

    python benchmarks/neighbors.py [--sizes 21 166 1000 5000] [--cutoff 5] [--device cpu] [--threads 1] [--clock cpu]
"""

from __future__ import annotations

import sys

import argparse
import platform
import statistics
import time

import torch

from openmlff.models.neighbors import neighbor_pairs

from pages import result_page  # noqa: E402  (benchmarks/pages.py)

WATER_ATOM_DENSITY_PER_A3 = 0.1


def water_density_cloud(n_atoms: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """n_atoms uniform positions (Å, float64) in a cube at water's atom density; returns (positions, side in Å)."""
    side = (n_atoms / WATER_ATOM_DENSITY_PER_A3) ** (1.0 / 3.0)
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n_atoms, 3, dtype=torch.float64, generator=generator) * side, side


def ms_per_call(fn, device: torch.device, min_seconds: float, clock: str = "wall", min_calls: int = 5) -> float:
    """Median time of fn() in ms over at least min_calls calls and min_seconds seconds, after 3 warm-up calls.

    clock "wall": elapsed time; "cpu": CPU time of this process, which a busy shared machine
    distorts less (meaningful for one CPU thread only).
    """
    timer = time.perf_counter if clock == "wall" else time.process_time
    for _ in range(3):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        t0 = timer()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(timer() - t0)
    return 1000.0 * statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[21, 166, 256, 512, 1000, 2000, 5000])
    p.add_argument("--cutoff", type=float, default=5.0, help="cutoff in Å (default 5, the ET default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum time spent per measurement")
    p.add_argument("--max-periodic-all-pairs", type=int, default=2000,
                   help="skip periodic all_pairs above this many atoms (it holds N^2 x 3 float64 several times)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall-clock time (default) or this process's CPU time (steadier on a busy machine, 1 thread)")
    p.add_argument("--eager", action="store_true", help="time the Python function instead of the TorchScript one")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    search = neighbor_pairs if args.eager else torch.jit.script(neighbor_pairs)
    where = platform.processor() or platform.machine()
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    print(f"# neighbour search, {time.strftime('%Y-%m-%d')}, {where}, {args.threads} torch thread(s), "
          f"torch {torch.__version__}, {'eager' if args.eager else 'TorchScript'}")
    print(f"# random clouds at {WATER_ATOM_DENSITY_PER_A3} atoms/Å^3 (water), cutoff {args.cutoff} Å, float64; "
          f"ms per call (median, {args.clock} clock); periodic: the cloud's cube as the box")
    header = (f"{'atoms':>6} {'pairs':>9} {'all_pairs ms':>13} {'cell_list ms':>13} {'all/cell':>9} "
              f"{'pbc all_pairs ms':>17} {'pbc cell_list ms':>17}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        pos, side = water_density_cloud(n)
        pos = pos.to(device)
        batch = torch.zeros(n, dtype=torch.long, device=device)
        box = torch.eye(3, dtype=torch.float64, device=device) * side
        periodic = 2.0 * args.cutoff <= side
        n_pairs = int(search(pos, batch, args.cutoff, "cell_list")[0].numel())

        def timed(method: str, with_box: bool = False) -> float:
            b = box if with_box else None
            return ms_per_call(lambda: search(pos, batch, args.cutoff, method, b), device, args.seconds, args.clock)

        t_all, t_cell = timed("all_pairs"), timed("cell_list")
        t_pbc_all = t_pbc_cell = float("nan")
        if periodic and n <= args.max_periodic_all_pairs:
            t_pbc_all = timed("all_pairs", with_box=True)
        if periodic:
            t_pbc_cell = timed("cell_list", with_box=True)
        print(f"{n:>6} {n_pairs:>9} {t_all:>13.3f} {t_cell:>13.3f} {t_all / t_cell:>9.2f} "
              f"{_text(t_pbc_all):>17} {_text(t_pbc_cell):>17}")
    print("# pbc columns: '-' where the box is under two cutoffs across (too small) or periodic all_pairs is skipped")
    return 0


def _text(ms: float) -> str:
    return "-" if ms != ms else f"{ms:.3f}"


if __name__ == "__main__":
    with result_page("neighbors", "Neighbour search: all pairs against the cell list"):
        code = main()
    sys.exit(code)
