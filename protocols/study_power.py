"""Power of the stability study's tests, by simulation, before any run (issue 35 item 1; docs/study.md cites it).

A. Ranking models: M models, a metric x_m, a latent stability s_m correlated with it (latent rho), each model's
   probability of a stable run p_m = Phi(1.2 s_m) (spread from about 0.1 to 0.9: graded outcomes), R runs per model
   each stable with p_m. Power of Spearman's test (two-sided, alpha 0.05) between x and the observed stable share.
B. One metric against the global force MAE: latent rho 0.7 for the metric, 0.3 for the MAE, the two metrics
   correlated 0.5 across models. Power of the paired bootstrap (models resampled, 95 % interval of
   |rho_metric| - |rho_MAE| excluding 0), the test docs/study.md plans.
C. Arms against their controls: collapse times exponential, the control's hazard making half its runs collapse
   within the horizon, the arm's hazard ratio HR; runs censored at the horizon; n runs per arm. Power of the
   log-rank test (scipy.stats.logrank, two-sided, alpha 0.05), and of Fisher's exact test on stable counts.

Seeded; the page says how many simulations each cell used.

    python protocols/study_power.py [--simulations 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pages import result_page  # noqa: E402

SPREAD = 1.2  # p_m = Phi(SPREAD * s_m)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (ties averaged)."""
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    return (rx * ry).sum(-1) / np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1) + 1e-300)


def latent_models(rng, n_models: int, rho: float, runs: int):
    s = rng.standard_normal(n_models)
    x = rho * s + np.sqrt(1 - rho ** 2) * rng.standard_normal(n_models)
    share = rng.binomial(runs, stats.norm.cdf(SPREAD * s)) / runs
    return x, s, share


def power_ranking(rng, n_models: int, rho: float, runs: int, sims: int) -> float:
    hits = 0
    for _ in range(sims):
        x, _, share = latent_models(rng, n_models, rho, runs)
        hits += stats.spearmanr(x, share).pvalue < 0.05
    return hits / sims


def power_paired(rng, n_models: int, runs: int, sims: int, boots: int = 400, rho_a: float = 0.7, rho_b: float = 0.3,
                 r: float = 0.5) -> float:
    hits = 0
    for _ in range(sims):
        s = rng.standard_normal(n_models)
        e1, e2 = rng.standard_normal(n_models), rng.standard_normal(n_models)
        a = rho_a * s + np.sqrt(1 - rho_a ** 2) * e1
        b = rho_b * s + np.sqrt(1 - rho_b ** 2) * (r * e1 + np.sqrt(1 - r ** 2) * e2)
        share = rng.binomial(runs, stats.norm.cdf(SPREAD * s)) / runs
        idx = rng.integers(0, n_models, size=(boots, n_models))
        diff = np.abs(spearman_rows(a[idx], share[idx])) - np.abs(spearman_rows(b[idx], share[idx]))
        lo, hi = np.nanpercentile(diff, [2.5, 97.5])
        hits += lo > 0 or hi < 0
    return hits / sims


def power_arms(rng, n_per_arm: int, hazard_ratio: float, sims: int) -> tuple[float, float]:
    hazard = np.log(2.0)  # half the control runs collapse within the horizon (1)
    logrank = fisher = 0
    for _ in range(sims):
        t0 = rng.exponential(1 / hazard, n_per_arm)
        t1 = rng.exponential(1 / (hazard * hazard_ratio), n_per_arm)
        groups = [stats.CensoredData(uncensored=t[t < 1], right=np.ones(int((t >= 1).sum()))) for t in (t0, t1)]
        logrank += stats.logrank(*groups).pvalue < 0.05
        table = [[int((t0 < 1).sum()), int((t0 >= 1).sum())], [int((t1 < 1).sum()), int((t1 >= 1).sum())]]
        fisher += stats.fisher_exact(table).pvalue < 0.05
    return logrank / sims, fisher / sims


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--simulations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=35)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    sims = args.simulations
    print(f"# power by simulation, seed {args.seed}; alpha 0.05 two-sided; p_m = Phi({SPREAD} s_m)")
    print(f"\n## A. Spearman test of a metric against the stable share ({sims} simulations per cell)")
    print(f"{'models':>7} {'runs/model':>11} " + " ".join(f"{'rho ' + str(r):>9}" for r in (0.4, 0.6, 0.8)))
    for n_models in (6, 12, 24, 36, 48):
        for runs in (16, 32):
            row = [power_ranking(rng, n_models, rho, runs, sims) for rho in (0.4, 0.6, 0.8)]
            print(f"{n_models:>7} {runs:>11} " + " ".join(f"{v:>9.2f}" for v in row), flush=True)
    paired_sims = max(100, sims // 4)
    print(f"\n## B. Paired bootstrap: metric (latent rho 0.7) against the global MAE (0.3), correlated 0.5 "
          f"({paired_sims} simulations x 400 resamples per cell)")
    print(f"{'models':>7} {'runs/model':>11} {'power':>7}")
    for n_models in (6, 12, 24, 36, 48):
        print(f"{n_models:>7} {16:>11} {power_paired(rng, n_models, 16, paired_sims):>7.2f}", flush=True)
    print(f"\n## C. An arm against its control: half the control's runs collapse within the horizon "
          f"({sims} simulations per cell)")
    print(f"{'runs/arm':>9} {'HR':>5} {'log-rank':>9} {'Fisher':>7}")
    for n in (16, 48, 96):
        for hr in (0.33, 0.5, 0.67):
            lr, fi = power_arms(rng, n, hr, sims)
            print(f"{n:>9} {hr:>5} {lr:>9.2f} {fi:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    with result_page("study_power", "Power of the stability study's tests, by simulation"):
        code = main()
    sys.exit(code)
