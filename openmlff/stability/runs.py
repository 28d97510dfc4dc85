"""Stability of a set of MD runs (one model, or one starting conformation) from their summary.json files.

Each run ends either with a collapse at collapse_time_ps (docs/architecture.md "Stability criterion") or
stable after simulated_time_ps. Over a horizon H (ps), the time of run k is

    T_k = collapse_time_ps            if it collapsed at or before H   (an event)
    T_k = min(simulated_time_ps, H)   otherwise                        (censored: it lasted at least T_k)

A run that collapsed after H counts as stable within the horizon; a stable run shorter than H is
censored at its own length (n_censored_before_horizon says how many; they count as stable).

    share_stable               = (runs without a collapse within H) / n_runs
    median_time_to_collapse_ps = median_k T_k   (censored runs at their censoring time: a lower bound
                                                 of the true median, equal to H once half the runs are stable;
                                                 median_is_lower_bound says so)
    mean_time_to_collapse_ps   = mean_k T_k     (the mean restricted to the horizon)
    km_median_time_to_collapse_ps: the Kaplan-Meier median, the first event time t with
        S(t) = Π_{t_i <= t} (1 - d_i / n_i) <= 1/2 (d_i collapses at t_i, n_i runs still at risk);
        None when S stays above 1/2 (more than half survive). It uses censoring properly when runs
        have different lengths; with all runs censored at H it is the ceil(n/2)-th smallest T_k (the
        lower median) whenever it is defined.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from ..core.errors import InputError

_TIME_TOLERANCE = 1e-9  # relative; simulated times are step * dt and may differ from H by rounding


def _named(summaries) -> list[tuple[str, Mapping]]:
    if isinstance(summaries, Mapping):
        return [(str(k), v) for k, v in summaries.items()]
    return [(f"run {k}", s) for k, s in enumerate(summaries)]


def _time(summary: Mapping, key: str, name: str) -> float:
    value = summary.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise InputError(f"{name}: summary.json field {key!r} must be a finite time >= 0 in ps, got {value!r}")
    return float(value)


def run_outcome(summary: Mapping, horizon_ps: float, name: str = "run") -> tuple[bool, float, bool]:
    """(collapsed within the horizon, T in ps, censored before the horizon) of one run's summary.json dict.

    T as in the module docstring. ValueError naming the run and field when "stable" is missing or a
    collapsed run has no collapse_time_ps / a stable one no simulated_time_ps.
    """
    if not isinstance(summary, Mapping) or not isinstance(summary.get("stable"), bool):
        raise InputError(f"{name}: expected a summary.json dict with a boolean 'stable' field")
    horizon = float(horizon_ps)
    if summary["stable"] is False:
        t = _time(summary, "collapse_time_ps", name)
        if t <= horizon * (1 + _TIME_TOLERANCE):
            return True, t, False
        return False, horizon, False
    t = _time(summary, "simulated_time_ps", name)
    short = t < horizon * (1 - _TIME_TOLERANCE)
    return False, min(t, horizon), short


def kaplan_meier(times_ps, collapsed) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival S(t) just after each distinct event time: (event times ps, S) (empty without events)."""
    t = np.asarray(times_ps, dtype=np.float64)
    e = np.asarray(collapsed, dtype=bool)
    event_times = np.unique(t[e])
    at_risk = np.array([(t >= u).sum() for u in event_times], dtype=np.float64)
    deaths = np.array([((t == u) & e).sum() for u in event_times], dtype=np.float64)
    return event_times, np.cumprod(1.0 - deaths / at_risk)


def stability_of_runs(summaries: Iterable[Mapping] | Mapping[str, Mapping], horizon_ps: float) -> dict:
    """Stability of a set of runs from their summary.json dicts (a list, or {run_id: summary}), as defined in
    the module docstring: a JSON-ready dict of n_runs, n_collapsed, n_stable, share_stable, horizon_ps,
    median_time_to_collapse_ps, median_is_lower_bound, mean_time_to_collapse_ps, km_median_time_to_collapse_ps
    (None when undefined), n_censored_before_horizon, per run (input order) run_ids, times_ps, collapsed, and
    of the runs that collapsed within the horizon collapse_reasons {reason: count} and first_broken_bonds
    {"C-H": count} (element pairs, sorted)."""
    horizon = float(horizon_ps)
    if not math.isfinite(horizon) or horizon <= 0:
        raise InputError(f"horizon_ps must be a positive time in ps, got {horizon_ps!r}")
    named = _named(summaries)
    if not named:
        raise InputError("no runs: stability needs at least one summary.json")
    outcomes = [run_outcome(s, horizon, name) for name, s in named]
    collapsed = np.array([o[0] for o in outcomes])
    times = np.array([o[1] for o in outcomes])
    n_runs, n_collapsed = len(outcomes), int(collapsed.sum())
    event_times, survival = kaplan_meier(times, collapsed)
    below = np.flatnonzero(survival <= 0.5)
    collapses = [s for (_, s), c in zip(named, collapsed) if c]
    reasons = Counter(str(s.get("collapse_reason")) for s in collapses)
    bonds = Counter("-".join(sorted(b["elements"])) for b in (s.get("first_broken_bond") for s in collapses)
                    if b and b.get("elements"))
    return {
        "n_runs": n_runs, "n_collapsed": n_collapsed, "n_stable": n_runs - n_collapsed,
        "share_stable": (n_runs - n_collapsed) / n_runs, "horizon_ps": horizon,
        "median_time_to_collapse_ps": float(np.median(times)),
        "median_is_lower_bound": bool(2 * (n_runs - n_collapsed) >= n_runs),
        "mean_time_to_collapse_ps": float(times.mean()),
        "km_median_time_to_collapse_ps": float(event_times[below[0]]) if below.size else None,
        "n_censored_before_horizon": int(sum(o[2] for o in outcomes)),
        "run_ids": [name for name, _ in named], "times_ps": times.tolist(), "collapsed": collapsed.tolist(),
        "collapse_reasons": dict(sorted(reasons.items())), "first_broken_bonds": dict(sorted(bonds.items())),
    }


def start_runs(entries: Iterable[tuple[str, Mapping]], horizon_ps: float) -> list[tuple[str, bool, float]]:
    """(start_id, collapsed within the horizon, T in ps) per run from (start_id, summary.json dict) pairs:
    the `runs` input of openmlff.stability.correlation.conformation_level_correlation."""
    return [(str(start), *run_outcome(summary, horizon_ps, f"run {k} (start {start!r})")[:2])
            for k, (start, summary) in enumerate(entries)]


def share_stable_interval(n_stable: int, n_runs: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the share of stable runs (scipy.stats.binomtest): good at small n and at 0 or n."""
    from scipy.stats import binomtest

    interval = binomtest(int(n_stable), int(n_runs)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def compare_stability(method: Mapping, control: Mapping) -> dict:
    """Two-sided log-rank test of two sets of runs (stability_of_runs results) over their times and collapses:
    logrank_statistic (scipy.stats.logrank's signed z, negative when `method`'s runs collapse less than expected
    under equal survival), logrank_p (None, with a note, when there is nothing to compare), and better ("method",
    "control" or "same" by the sign, whatever the p)."""
    from scipy.stats import CensoredData, logrank

    def data(s):
        t, c = np.asarray(s["times_ps"], dtype=np.float64), np.asarray(s["collapsed"], dtype=bool)
        return CensoredData(uncensored=t[c], right=t[~c])

    undefined = {"logrank_statistic": None, "logrank_p": None, "better": "same"}
    if not (any(method["collapsed"]) or any(control["collapsed"])):
        return dict(undefined, note="no collapse in either set of runs")
    if _same_runs(method, control):  # the statistic's variance is 0: scipy gives NaN
        return dict(undefined, note="the two sets of runs have the same times and collapses")
    result = logrank(data(method), data(control))
    z = float(result.statistic)
    return {"logrank_statistic": z, "logrank_p": float(result.pvalue),
            "better": "method" if z < 0 else "control" if z > 0 else "same"}


def hazard_ratio(method: Mapping, control: Mapping, n_bootstrap: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> dict:
    """The method's hazard of collapse relative to the control's, from exponential rates: HR = (d_m / T_m) /
    (d_c / T_c), d the collapses and T the total time at risk (ps) of each set's runs (stability_of_runs
    results). Below 1: the method's runs collapse less. The interval is a percentile bootstrap resampling the runs
    of each set on its own (quantiles without interpolation, so an infinite ratio stays one). Returns
    hazard_ratio, ci_low, ci_high, the rates per ps, events and time at risk per set, confidence, n_bootstrap."""
    def arrays(s):
        return np.asarray(s["times_ps"], dtype=np.float64), np.asarray(s["collapsed"], dtype=np.float64)

    (tm, em), (tc, ec) = arrays(method), arrays(control)
    with np.errstate(divide="ignore", invalid="ignore"):
        def ratio(d_m, t_m, d_c, t_c):
            return (d_m / t_m) / (d_c / t_c)

        point = float(ratio(em.sum(), tm.sum(), ec.sum(), tc.sum()))
        rng = np.random.default_rng(seed)
        im = rng.integers(0, tm.size, size=(n_bootstrap, tm.size))
        ic = rng.integers(0, tc.size, size=(n_bootstrap, tc.size))
        draws = ratio(em[im].sum(1), tm[im].sum(1), ec[ic].sum(1), tc[ic].sum(1))
    draws = draws[~np.isnan(draws)]
    alpha = (1 - confidence) / 2
    low, high = (np.quantile(draws, [alpha, 1 - alpha], method="inverted_cdf") if draws.size
                 else (math.nan, math.nan))
    return {"hazard_ratio": point, "ci_low": float(low), "ci_high": float(high), "confidence": confidence,
            "n_bootstrap": int(n_bootstrap), "method_rate_per_ps": float(em.sum() / tm.sum()),
            "control_rate_per_ps": float(ec.sum() / tc.sum()), "method_collapses": int(em.sum()),
            "control_collapses": int(ec.sum()), "method_time_at_risk_ps": float(tm.sum()),
            "control_time_at_risk_ps": float(tc.sum())}


def comparison_row(method_name: str, control_name: str, method: Mapping, control: Mapping) -> dict:
    """One row of a method-against-control table (the campaign report's `comparisons`): compare_stability
    plus each side's share of stable runs with its Wilson 95 % interval and Kaplan-Meier median (ps)."""
    def ci(s):
        return list(s.get("share_stable_ci95") or share_stable_interval(s["n_stable"], s["n_runs"]))

    return {"method": method_name, "control": control_name, **compare_stability(method, control),
            "method_share_stable": method["share_stable"], "method_share_stable_ci": ci(method),
            "control_share_stable": control["share_stable"], "control_share_stable_ci": ci(control),
            "method_km_median_ps": method["km_median_time_to_collapse_ps"],
            "control_km_median_ps": control["km_median_time_to_collapse_ps"]}


def _same_runs(a: Mapping, b: Mapping) -> bool:
    """Whether two sets of runs have the same multiset of (time, collapsed)."""
    def key(s):
        return sorted(zip(np.round(np.asarray(s["times_ps"], dtype=np.float64), 9).tolist(), map(bool, s["collapsed"])))
    return key(a) == key(b)
