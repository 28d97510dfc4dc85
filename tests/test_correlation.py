"""Correlation of force metrics with MD stability: rank statistics, ROC, run stability, metric sets, tables."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from openmlff.metrics import ForceErrorAccumulator, cluster_conformations, cluster_force_metrics
from openmlff.stability.correlation import (
    conformation_level_correlation, kendall_tau_b_rows, model_level_correlation, paired_rho_difference, per_start_outcomes, rank_correlations, roc_auc, roc_auc_bootstrap, roc_curve, spearman_rows, strongest_rows,
)
from openmlff.metrics.metric_sets import evaluation_metric_set, model_metric_sets, start_conformation_metrics
from openmlff.stability.runs import (
    compare_stability, kaplan_meier, run_outcome, share_stable_interval, stability_of_runs, start_runs,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (untrained_model)



def _scipy(fn, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(x, y)


# --- rank correlations ------------------------------------------------------------------------------

def test_rank_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, size=25).astype(float)  # many ties
    y = x + rng.normal(scale=2.0, size=25)
    y[::5] = y[0]  # ties in y as well
    res = rank_correlations(x, y, n_bootstrap=200)
    spearman, kendall = _scipy(stats.spearmanr, x, y), _scipy(stats.kendalltau, x, y)
    assert res["n"] == 25 and res["n_dropped"] == 0
    assert res["spearman_rho"] == pytest.approx(spearman.statistic, abs=1e-12)
    assert res["spearman_p"] == pytest.approx(spearman.pvalue, rel=1e-9)
    assert res["kendall_tau"] == pytest.approx(kendall.statistic, abs=1e-12)
    assert res["kendall_p"] == pytest.approx(kendall.pvalue, rel=1e-9)


@pytest.mark.parametrize("n", [12, 260])  # 260: the scipy path of kendall_tau_b_rows
def test_vectorised_bootstrap_statistics_match_scipy_row_by_row(n):
    rng = np.random.default_rng(n)
    X = rng.integers(0, 5, size=(6, n)).astype(float)
    Y = X + rng.integers(-2, 3, size=(6, n))
    X[0] = 1.0  # a constant row: undefined
    rho, tau = spearman_rows(X, Y), kendall_tau_b_rows(X, Y)
    assert math.isnan(rho[0]) and math.isnan(tau[0])
    for k in range(1, 6):
        assert rho[k] == pytest.approx(_scipy(stats.spearmanr, X[k], Y[k]).statistic, abs=1e-12)
        assert tau[k] == pytest.approx(_scipy(stats.kendalltau, X[k], Y[k]).statistic, abs=1e-12)


def test_intervals_are_scipys_percentile_bootstrap_of_the_pairs():
    """scipy.stats.bootstrap (paired, percentile) gives the intervals; they equal the quantiles over the explicit
    draws rng.integers(0, n, (n_bootstrap, n)) of numpy's default_rng(seed), and scipy's own interval when every
    resample is defined."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    n_boot, seed = 300, 4
    res = rank_correlations(x, y, n_bootstrap=n_boot, seed=seed)
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    for name, fn in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        values = [fn(x[row], y[row]).statistic for row in idx]
        assert res[f"{name}_ci_low"] == pytest.approx(np.quantile(values, 0.025), abs=1e-12)
        assert res[f"{name}_ci_high"] == pytest.approx(np.quantile(values, 0.975), abs=1e-12)
        scipy_ci = stats.bootstrap((x, y), lambda a, b: fn(a, b).statistic, paired=True, vectorized=False,
                                   n_resamples=n_boot, method="percentile",
                                   random_state=np.random.default_rng(seed)).confidence_interval
        assert (res[f"{name}_ci_low"], res[f"{name}_ci_high"]) == pytest.approx(tuple(scipy_ci), abs=1e-12)
    assert res["n_bootstrap_valid"] == n_boot


def test_monotone_data_give_plus_and_minus_one_with_degenerate_intervals():
    x = np.array([0.3, 1.0, 2.5, 4.0, 7.0, 9.0])
    up = rank_correlations(x, x**2 + 1, n_bootstrap=300)
    down = rank_correlations(x, -np.exp(x), n_bootstrap=300)
    for res, sign in ((up, 1.0), (down, -1.0)):
        for key in ("spearman_rho", "kendall_tau", "spearman_ci_low", "spearman_ci_high", "kendall_ci_low",
                    "kendall_ci_high"):
            assert res[key] == pytest.approx(sign)
    # resamples drawing one pair only (all x equal) are undefined and left out, not counted as 0
    assert 0 < up["n_bootstrap_valid"] <= 300


def test_interval_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(7)
    widths = []
    for n in (15, 60, 240):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        res = rank_correlations(x, y, n_bootstrap=1000, seed=1)
        for stat in ("spearman", "kendall"):
            point = res[f"{stat}_rho" if stat == "spearman" else "kendall_tau"]
            assert res[f"{stat}_ci_low"] <= point <= res[f"{stat}_ci_high"]
        widths.append(res["spearman_ci_high"] - res["spearman_ci_low"])
    assert widths[0] > widths[1] > widths[2]
    # deterministic for a seed
    x = rng.normal(size=20)
    a = rank_correlations(x, np.sin(x), n_bootstrap=200, seed=5)
    b = rank_correlations(x, np.sin(x), n_bootstrap=200, seed=5)
    assert a == b


def test_rank_correlations_are_nan_safe():
    res = rank_correlations([1.0, 2.0, np.nan, 4.0, 5.0], [2.0, 1.0, 3.0, np.inf, 6.0], n_bootstrap=100)
    assert res["n"] == 3 and res["n_dropped"] == 2
    assert res["spearman_rho"] == pytest.approx(0.5)
    constant = rank_correlations([1, 2, 3, 4], [5, 5, 5, 5], n_bootstrap=50)
    too_few = rank_correlations([1, 2], [3, 4], n_bootstrap=50)
    for res in (constant, too_few):
        assert all(math.isnan(res[k]) for k in ("spearman_rho", "kendall_tau", "spearman_ci_low", "kendall_p"))
    # mostly tied x: many resamples are constant in x; the interval uses the others
    tied = rank_correlations([0, 0, 0, 0, 0, 0, 1, 1], [1, 2, 1, 3, 2, 1, 5, 6], n_bootstrap=400)
    assert tied["n_bootstrap_valid"] < 400 and math.isfinite(tied["spearman_ci_low"])
    with pytest.raises(ValueError, match="one y per x"):
        rank_correlations([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="confidence"):
        rank_correlations([1, 2, 3], [1, 2, 3], confidence=95)


# --- ROC --------------------------------------------------------------------------------------------

def test_roc_auc_by_hand_with_a_tie():
    # positives score 0.4 and 0.8, negatives 0.1 and 0.4: pairs (0.4>0.1) 1, (0.4=0.4) 1/2, (0.8>0.1) 1, (0.8>0.4) 1
    scores, labels = [0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]
    assert roc_auc(scores, labels) == pytest.approx(3.5 / 4)
    assert roc_auc(scores, np.array(labels, dtype=bool)) == pytest.approx(0.875)
    assert roc_auc(scores, [1, 1, 0, 0]) == pytest.approx(1 - 0.875)
    curve = roc_curve(scores, labels)
    np.testing.assert_allclose(curve["fpr"], [0, 0, 0.5, 1])
    np.testing.assert_allclose(curve["tpr"], [0, 0.5, 1, 1])
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(0.875)
    assert math.isnan(roc_auc([1.0, 2.0], [1, 1]))
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([1.0, 2.0], [0, 2])


@pytest.mark.parametrize("scores, labels", [
    ([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]),  # one tie across the classes
    ([2.0, 2.0, 2.0, 2.0], [0, 1, 0, 1]),  # all tied: 1/2
    ([3.0, 1.0, 2.0, 2.0, 2.0, 5.0], [1, 0, 1, 0, 0, 1]),  # a positive tied with two negatives
    ([0.0, 0.0, 1.0, 1.0, 1.0], [1, 1, 0, 0, 1]),  # ties within and across the classes
    (np.round(np.random.default_rng(5).normal(size=40), 0), np.random.default_rng(6).random(40) > 0.6),
])
def test_roc_auc_from_mann_whitney_equals_the_pair_formula_with_ties(scores, labels):
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p in s[y] for n in s[~y]]
    assert roc_auc(s, y) == pytest.approx(np.mean(pairs), abs=1e-15)


def test_roc_auc_matches_mann_whitney_and_curve_area():
    rng = np.random.default_rng(11)
    scores = np.round(rng.normal(size=80), 1)  # rounded: ties
    labels = scores + rng.normal(size=80) > 0.3
    u = stats.mannwhitneyu(scores[labels], scores[~labels]).statistic
    auc = roc_auc(scores, labels)
    assert auc == pytest.approx(u / (labels.sum() * (~labels).sum()))
    curve = roc_curve(scores, labels)
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(auc)


def test_grouped_roc_bootstrap_equals_explicit_group_resampling():
    rng = np.random.default_rng(2)
    groups = np.repeat([f"g{k}" for k in range(7)], 3)
    start_score = {f"g{k}": s for k, s in enumerate(rng.normal(size=7))}
    scores = np.array([start_score[g] for g in groups])
    labels = scores + rng.normal(scale=0.8, size=scores.size) > 0
    n_boot = 300
    res = roc_auc_bootstrap(scores, labels, groups=groups, n_bootstrap=n_boot, seed=4)
    # reference: draw the same group indices, expand the runs of each drawn group, plain roc_auc
    names = sorted(set(groups))
    idx = np.random.default_rng(4).integers(0, len(names), size=(n_boot, len(names)))
    values = []
    for row in idx:
        members = np.concatenate([np.flatnonzero(groups == names[g]) for g in row])
        values.append(roc_auc(scores[members], labels[members]))
    values = np.array(values)
    valid = values[np.isfinite(values)]
    assert res["n_bootstrap_valid"] == valid.size
    assert res["roc_auc_ci_low"] == pytest.approx(np.quantile(valid, 0.025))
    assert res["roc_auc_ci_high"] == pytest.approx(np.quantile(valid, 0.975))
    assert res["roc_auc"] == pytest.approx(roc_auc(scores, labels))
    assert res["n_groups"] == 7 and res["n_positive"] == labels.sum()


# --- run stability ----------------------------------------------------------------------------------

def _collapsed(t, elements=("C", "H")):
    return {"stable": False, "collapse_time_ps": t, "simulated_time_ps": t, "collapse_reason": "bond_deviation",
            "first_broken_bond": {"atoms": [0, 1], "elements": list(elements)}}


def _stable(t):
    return {"stable": True, "collapse_time_ps": None, "simulated_time_ps": t}


def test_stability_with_censoring_by_hand():
    # horizon 10 ps: collapses at 2 and 4 ps; one at 12 ps (after the horizon: stable, T = 10);
    # one stable run of 10 ps; one stable run of only 6 ps (censored before the horizon, T = 6)
    runs = {"a": _collapsed(2.0), "b": _collapsed(4.0, ("O", "H")), "c": _collapsed(12.0), "d": _stable(10.0),
            "e": _stable(6.0)}
    s = stability_of_runs(runs, horizon_ps=10.0)
    assert (s["n_runs"], s["n_collapsed"], s["n_stable"]) == (5, 2, 3)
    assert s["share_stable"] == pytest.approx(0.6)
    assert s["times_ps"] == [2.0, 4.0, 10.0, 10.0, 6.0]
    assert s["median_time_to_collapse_ps"] == pytest.approx(6.0)  # of 2, 4, 6, 10, 10
    assert s["mean_time_to_collapse_ps"] == pytest.approx(32.0 / 5)
    assert s["median_is_lower_bound"] is True
    assert s["km_median_time_to_collapse_ps"] is None  # S: 4/5 after 2 ps, 3/5 after 4 ps: never <= 1/2
    assert s["n_censored_before_horizon"] == 1
    assert s["first_broken_bonds"] == {"C-H": 1, "H-O": 1}
    assert s["run_ids"] == list(runs)

    # Kaplan-Meier median defined: collapses at 1, 2, 3 ps, one run stable to 10 ps: S = 3/4, 2/4 -> 2 ps,
    # while the plain median of (1, 2, 3, 10) is 2.5 ps
    s2 = stability_of_runs([_collapsed(1.0), _collapsed(2.0), _collapsed(3.0), _stable(10.0)], 10.0)
    assert s2["km_median_time_to_collapse_ps"] == pytest.approx(2.0)
    assert s2["median_time_to_collapse_ps"] == pytest.approx(2.5)
    assert s2["median_is_lower_bound"] is False
    t, surv = kaplan_meier([1.0, 2.0, 3.0, 10.0], [True, True, True, False])
    np.testing.assert_allclose(surv, [0.75, 0.5, 0.25])


def test_run_outcome_errors_name_the_run():
    assert run_outcome(_collapsed(10.0 + 1e-12), 10.0) == (True, 10.0 + 1e-12, False)  # at the horizon counts
    with pytest.raises(ValueError, match="r7.*'stable'"):
        stability_of_runs({"r7": {"collapse_time_ps": 1.0}}, 10.0)
    with pytest.raises(ValueError, match="run 1.*collapse_time_ps"):
        stability_of_runs([_stable(5.0), {"stable": False, "collapse_time_ps": None}], 10.0)
    with pytest.raises(ValueError, match="horizon_ps"):
        stability_of_runs([_stable(5.0)], 0.0)
    runs = start_runs([("s0", _collapsed(3.0)), ("s0", _stable(10.0)), ("s1", _collapsed(20.0))], 10.0)
    assert runs == [("s0", True, 3.0), ("s0", False, 10.0), ("s1", False, 10.0)]
    outcomes = per_start_outcomes(runs)
    assert outcomes["s0"] == {"n_runs": 2, "n_collapsed": 1, "collapse_rate": 0.5, "mean_time_to_collapse_ps": 6.5}


def test_share_interval_is_wilsons():
    # Wilson score interval by hand: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    n, k, z = 16, 4, 1.959963984540054
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = share_stable_interval(k, n)
    assert low == pytest.approx((centre - half) / (1 + z * z / n), rel=1e-9)
    assert high == pytest.approx((centre + half) / (1 + z * z / n), rel=1e-9)
    assert share_stable_interval(0, 16)[0] == 0.0 and share_stable_interval(16, 16)[1] == pytest.approx(1.0)


def test_logrank_comparison_by_hand():
    # method: collapses at 2 and 4 ps, two runs censored at 10; control: collapses at 1, 2, 3, one censored.
    # Log-rank by hand over the event times 1, 2, 3, 4 (n_m, n_c at risk; d_m, d total deaths):
    #   t=1: n 4,4 d 0/1   t=2: n 4,3 d 1/2   t=3: n 3,2 d 0/1   t=4: n 3,1 d 1/1
    method = stability_of_runs([_collapsed(2.0), _collapsed(4.0), _stable(10.0), _stable(10.0)], 10.0)
    control = stability_of_runs([_collapsed(1.0), _collapsed(2.0), _collapsed(3.0), _stable(10.0)], 10.0)
    table = [(4, 4, 0, 1), (4, 3, 1, 2), (3, 2, 0, 1), (3, 1, 1, 1)]
    observed = sum(d_m for _, _, d_m, _ in table)
    expected = sum(n_m / (n_m + n_c) * d for n_m, n_c, _, d in table)
    variance = sum(n_m * n_c * d * (n_m + n_c - d) / ((n_m + n_c) ** 2 * (n_m + n_c - 1))
                   for n_m, n_c, _, d in table if n_m + n_c > 1)
    z = (observed - expected) / math.sqrt(variance)
    result = compare_stability(method, control)
    assert result["logrank_statistic"] == pytest.approx(z, rel=1e-9) and z < 0
    assert result["logrank_p"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert result["better"] == "method" and compare_stability(control, method)["better"] == "control"
    none = stability_of_runs([_stable(10.0)] * 3, 10.0)
    assert compare_stability(none, none)["logrank_p"] is None
    same = compare_stability(control, control)
    assert same["logrank_p"] is None and same["better"] == "same"
    from openmlff.stability.runs import comparison_row

    row = comparison_row("m", "c", method, control)
    assert row["method"] == "m" and row["control"] == "c" and row["logrank_p"] == result["logrank_p"]
    assert row["method_share_stable"] == 0.5 and row["control_share_stable"] == 0.25
    assert row["method_share_stable_ci"] == pytest.approx(list(share_stable_interval(2, 4)))
    assert row["control_km_median_ps"] == control["km_median_time_to_collapse_ps"]


def test_hazard_ratio_of_exponential_rates_by_hand():
    """(2 collapses / 26 ps) / (3 / 16 ps); the interval is the percentile bootstrap of the same ratio over the
    runs of each set resampled on their own, without interpolation."""
    from openmlff.stability.runs import hazard_ratio

    method = stability_of_runs([_collapsed(2.0), _collapsed(4.0), _stable(10.0), _stable(10.0)], 10.0)
    control = stability_of_runs([_collapsed(1.0), _collapsed(2.0), _collapsed(3.0), _stable(10.0)], 10.0)
    hr = hazard_ratio(method, control, n_bootstrap=500, seed=3)
    assert hr["hazard_ratio"] == pytest.approx((2 / 26) / (3 / 16), rel=1e-12)
    assert hr["method_time_at_risk_ps"] == 26.0 and hr["control_collapses"] == 3
    t_m, e_m = np.array([2.0, 4.0, 10.0, 10.0]), np.array([1.0, 1.0, 0.0, 0.0])
    t_c, e_c = np.array([1.0, 2.0, 3.0, 10.0]), np.array([1.0, 1.0, 1.0, 0.0])
    rng = np.random.default_rng(3)
    im, ic = rng.integers(0, 4, size=(500, 4)), rng.integers(0, 4, size=(500, 4))
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = (e_m[im].sum(1) / t_m[im].sum(1)) / (e_c[ic].sum(1) / t_c[ic].sum(1))
    draws = draws[~np.isnan(draws)]
    assert hr["ci_low"] == np.quantile(draws, 0.025, method="inverted_cdf")
    assert hr["ci_high"] == np.quantile(draws, 0.975, method="inverted_cdf")
    assert hr["ci_low"] < hr["hazard_ratio"] < hr["ci_high"]
    none = stability_of_runs([_stable(10.0)] * 3, 10.0)
    assert hazard_ratio(method, none)["hazard_ratio"] == math.inf  # the control never collapsed


def test_similar_error_ranking_compares_fine_grained_metrics_with_the_mae():
    from openmlff.stability.correlation import similar_error_ranking

    # five models of nearly the same MAE whose H FNM MAE orders their stability; one far off (excluded)
    mae = {"a": 1.00, "b": 1.05, "c": 0.98, "d": 1.02, "e": 1.01, "far": 3.0}
    h_fnm = {"a": 0.10, "b": 0.20, "c": 0.30, "d": 0.40, "e": 0.50, "far": 0.9}
    share = {"a": 1.0, "b": 0.8, "c": 0.6, "d": 0.4, "e": 0.2, "far": 0.0}
    metrics = {m: {"test.force_mae": mae[m], "test.H.fnm_mae": h_fnm[m]} for m in mae}
    stability = {m: {"share_stable": share[m], "mean_time_to_collapse_ps": 5 * share[m]} for m in mae}
    out = similar_error_ranking(metrics, stability, metrics=("test.H.fnm_mae",))
    assert out["models"] == ["a", "b", "c", "d", "e"]
    rho = {(r["measure"], r["metric"]): r["spearman_rho"] for r in out["rows"]}
    assert rho[("share_stable", "test.H.fnm_mae")] == pytest.approx(-1.0)
    # MAE ranks (2, 5, 1, 4, 3) against share ranks (5, 4, 3, 2, 1): sum d^2 = 22, rho = 1 - 6 * 22 / 120
    assert rho[("share_stable", "test.force_mae")] == pytest.approx(-0.1)
    assert out["better_than_mae"] == {"share_stable": ["test.H.fnm_mae"], "mean_time_to_collapse_ps": ["test.H.fnm_mae"]}
    few = similar_error_ranking(metrics, stability, tolerance=0.015)
    assert few["rows"] == [] and "too few" in few["note"]


# --- model and conformation level --------------------------------------------------------------------

def _synthetic_campaign(seed: int = 0, n_models: int = 10, runs_per_model: int = 16, horizon: float = 20.0):
    """Models whose hidden instability sets their collapse rate; FNM max follows it, the force MAE does not."""
    rng = np.random.default_rng(seed)
    instability = np.linspace(0.02, 0.5, n_models)
    metrics, stability = {}, {}
    for k, u in enumerate(instability):
        model = f"model{k}"
        metrics[model] = {"test.force_mae": float(rng.uniform(0.4, 1.2)),  # unrelated to stability
                          "test.fnm_max": float(2.0 * u + rng.normal(scale=0.04)),
                          "test.energy_mae": None if k == 0 else float(rng.uniform(0.1, 0.3))}
        times = rng.exponential(1.0 / u, size=runs_per_model)
        stability[model] = stability_of_runs([_collapsed(float(t)) if t < horizon else _stable(horizon) for t in times],
                                             horizon)
    return metrics, stability


def test_paired_difference_uses_the_same_resamples_for_both_metrics():
    """|rho(x)| - |rho(ref)| on each of the explicit draws of default_rng(seed) (scipy's paired resampling), its
    percentile interval and the share of draws <= 0; non-finite items dropped from all three."""
    rng = np.random.default_rng(5)
    y = rng.normal(size=30)
    x = -y + 0.5 * rng.normal(size=30)  # a good predictor (negative rho)
    ref = y + 3.0 * rng.normal(size=30)  # a poor one
    res = paired_rho_difference(x, ref, y, n_bootstrap=400, seed=2)
    rho = lambda a, b: abs(stats.spearmanr(a, b).statistic)  # noqa: E731
    assert res["abs_rho_difference"] == pytest.approx(rho(x, y) - rho(ref, y), abs=1e-12)
    idx = np.random.default_rng(2).integers(0, y.size, size=(400, y.size))
    draws = np.array([rho(x[row], y[row]) - rho(ref[row], y[row]) for row in idx])
    assert res["abs_rho_difference_ci_low"] == pytest.approx(np.quantile(draws, 0.025), abs=1e-12)
    assert res["abs_rho_difference_ci_high"] == pytest.approx(np.quantile(draws, 0.975), abs=1e-12)
    assert res["share_not_better"] == pytest.approx(np.mean(draws <= 0), abs=1e-12)
    assert res["abs_rho_difference_ci_low"] > 0 and res["n"] == 30 and res["n_bootstrap_valid"] == 400
    # the same metric against itself: no difference on any resample
    same = paired_rho_difference(ref, ref, y, n_bootstrap=200)
    assert same["abs_rho_difference"] == 0 and same["abs_rho_difference_ci_low"] == 0 == same["abs_rho_difference_ci_high"]
    assert same["share_not_better"] == 1.0
    # reversing x's sign changes nothing (|rho|); a NaN in the reference drops that item from all three
    assert paired_rho_difference(-x, ref, y, n_bootstrap=0)["abs_rho_difference"] == pytest.approx(
        res["abs_rho_difference"], abs=1e-12)
    ref_nan = ref.copy()
    ref_nan[0] = np.nan
    dropped = paired_rho_difference(x, ref_nan, y, n_bootstrap=0)
    assert dropped["n"] == 29 and dropped["abs_rho_difference"] == pytest.approx(
        rho(x[1:], y[1:]) - rho(ref[1:], y[1:]), abs=1e-12)
    with pytest.raises(ValueError, match="one each per item"):
        paired_rho_difference(x, ref[:5], y)


def test_model_level_fnm_max_predicts_stability_and_force_mae_does_not():
    metrics, stability = _synthetic_campaign()
    units = {"test.force_mae": "kcal/mol/Å", "test.fnm_max": "(kcal/mol/Å)/Da"}
    table = model_level_correlation(metrics, stability, metric_units=units, n_bootstrap=500)
    rows = {(r["metric"], r["stability_measure"]): r for r in table["rows"]}
    assert len(table["rows"]) == 3 * 2 and table["models"] == list(metrics)
    for measure in ("share_stable", "median_time_to_collapse_ps"):
        fnm, mae = rows[("test.fnm_max", measure)], rows[("test.force_mae", measure)]
        assert fnm["spearman_rho"] < -0.7 and fnm["spearman_ci_high"] < 0 and fnm["kendall_tau"] < -0.5
        assert abs(fnm["spearman_rho"]) > abs(mae["spearman_rho"])
        assert abs(fnm["kendall_tau"]) > abs(mae["kendall_tau"])
        assert mae["spearman_ci_low"] < 0 < mae["spearman_ci_high"]
        assert fnm["metric_unit"] == "(kcal/mol/Å)/Da" and fnm["n"] == 10
        assert rows[("test.energy_mae", measure)]["n"] == 9  # one model has no energy MAE
        # the paired comparison with the force MAE: on every row but the MAE's own, equal to the function's
        paired = paired_rho_difference([metrics[m]["test.fnm_max"] for m in table["models"]],
                                       [metrics[m]["test.force_mae"] for m in table["models"]],
                                       [stability[m][measure] for m in table["models"]], n_bootstrap=500,
                                       seed=0 if measure == "share_stable" else 1)
        assert fnm["versus_reference_abs_rho_difference"] == paired["abs_rho_difference"] > 0
        assert fnm["versus_reference_abs_rho_difference_ci_low"] == paired["abs_rho_difference_ci_low"]
        assert "versus_reference_abs_rho_difference" not in mae
    assert table["settings"]["reference_metric"] == "test.force_mae"
    best = [table["rows"][k]["metric"] for k in strongest_rows(table["rows"])]
    assert best == ["test.fnm_max", "test.fnm_max"]
    assert any("NEGATIVE" in note for note in table["notes"])
    with pytest.raises(ValueError, match="no model has both"):
        model_level_correlation({"a": {"m": 1.0}}, {"b": stability["model0"]})


def test_conformation_level_roc_on_synthetic_starts():
    rng = np.random.default_rng(5)
    horizon = 10.0
    starts = [f"start{k}" for k in range(12)]
    difficulty = dict(zip(starts, np.linspace(0, 1, 12)))
    metrics = {s: {"cluster.ratio_bad_points": float(d + rng.normal(scale=0.05)),
                   "cluster.noise": float(rng.normal()), "frame.force_mae": None if k % 4 == 0 else float(d)}
               for k, (s, d) in enumerate(difficulty.items())}
    entries = []
    for s, d in difficulty.items():
        for _ in range(5):
            t = rng.exponential(1.0 / (0.01 + 0.5 * d**2))
            entries.append((s, _collapsed(float(t)) if t < horizon else _stable(horizon)))
    runs = start_runs(entries, horizon)
    table = conformation_level_correlation(metrics, runs, n_bootstrap=400)
    rows = {(r["metric"], r["stability_measure"]): r for r in table["rows"]}
    good = rows[("cluster.ratio_bad_points", "collapse_rate")]
    noise = rows[("cluster.noise", "collapse_rate")]
    assert good["roc_auc"] > 0.8 and good["roc_auc_ci_low"] > 0.5
    assert good["spearman_rho"] > 0.6
    assert rows[("cluster.ratio_bad_points", "mean_time_to_collapse_ps")]["spearman_rho"] < -0.6
    assert noise["roc_auc_ci_low"] < 0.5 < noise["roc_auc_ci_high"]
    collapsed = np.array([c for _, c, _ in runs])
    scores = np.array([metrics[s]["cluster.ratio_bad_points"] for s, _, _ in runs])
    assert good["roc_auc"] == pytest.approx(roc_auc(scores, collapsed))
    assert good["n_runs"] == 60 and good["n_collapsed"] == collapsed.sum() and good["n_starts"] == 12
    partial = rows[("frame.force_mae", "collapse_rate")]
    assert partial["n_starts"] == 9 and partial["n_runs"] == 45  # starts without a value are left out
    curve = table["roc_curves"]["cluster.ratio_bad_points"]
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(good["roc_auc"])
    assert table["per_start"]["start0"]["n_runs"] == 5
    with pytest.raises(ValueError, match="no metrics"):
        conformation_level_correlation({"start0": {"m": 1.0}}, runs, n_bootstrap=10)


# --- metric sets from evaluations -------------------------------------------------------------------

@pytest.fixture(scope="module")
def aspirin(test_data):
    from openmlff.data import load_dataset

    return load_dataset(test_data / "datasets" / "rmd17_aspirin_100.npz")


def _evaluation(data, noise_scale: float, h_scale: float, seed: int) -> dict:
    """A model's evaluation result: reference forces plus noise (larger on hydrogens and on some frames)."""
    rng = np.random.default_rng(seed)
    scale = np.where(data.z == 1, h_scale, 1.0)[None, :, None] * noise_scale
    frame_scale = 1.0 + 2.0 * (np.arange(data.n_frames) % 10 == 0)[:, None, None]
    F_pred = data.F + rng.normal(size=data.F.shape) * scale * frame_scale
    acc = ForceErrorAccumulator(data.z)
    acc.add(F_pred, data.F, E_pred=data.E + rng.normal(scale=0.01, size=data.n_frames), E_ref=data.E)
    return acc.result()


def test_model_metric_sets_from_evaluations(aspirin):
    evaluations = {f"m{k}": {"test": _evaluation(aspirin, 0.05 * (k + 1), 2.0, k)} for k in range(3)}
    metrics, info = model_metric_sets(evaluations)
    ev = evaluations["m1"]["test"]
    m1 = metrics["m1"]
    for key in ("force_mae", "force_rmse", "force_max", "fnm_mae", "fnm_max", "energy_mae"):
        assert m1[f"test.{key}"] == pytest.approx(ev[key])
    for symbol in ("H", "C", "O"):
        for key in ("force_mae", "fnm_mae", "fnm_max"):
            assert m1[f"test.{symbol}.{key}"] == pytest.approx(ev["elements"][symbol][key])
    threshold = float(np.median([e["test"]["force_mae"] for e in evaluations.values()]))
    assert info["bad_frame_threshold"]["test"] == pytest.approx(threshold)
    frame_mae = np.asarray(ev["frames"]["force_mae"])
    assert m1["test.bad_frame_share"] == pytest.approx(np.mean(frame_mae > threshold))
    assert m1["test.worst_frame_force_mae"] == pytest.approx(frame_mae.max())
    assert info["metric_units"]["test.H.fnm_max"] == "(kcal/mol/Å)/Da"
    assert info["metric_units"]["test.bad_frame_share"] == "fraction of frames"
    assert info["metric_units"]["test.energy_mae"] == "kcal/mol"
    fixed = evaluation_metric_set(ev, bad_frame_threshold=0.0)
    assert fixed["bad_frame_share"] == 1.0
    with pytest.raises(ValueError, match="units"):
        model_metric_sets({"a": {"test": ev}, "b": {"test": _evaluation_in_kj(aspirin)}})


def _evaluation_in_kj(data) -> dict:
    acc = ForceErrorAccumulator(data.z)
    acc.add(data.F + 0.01, data.F, E_pred=data.E, E_ref=data.E)
    return acc.result(force_unit="kJ/mol/Å", energy_unit="kJ/mol")


def test_start_conformation_metrics_cluster_neighbours_and_own_frame(aspirin):
    ev = _evaluation(aspirin, 0.1, 3.0, 0)
    far_away = aspirin.R[3] + 0.05  # not an evaluated frame
    starts = {"f10": aspirin.R[10], "f42": aspirin.R[42], "new": far_away}
    metrics, info = start_conformation_metrics(ev, aspirin.R, starts, n_clusters=4, n_neighbours=1, seed=0)
    frames = ev["frames"]
    assert info["starts"]["f10"]["frame"] == 10 and info["starts"]["new"]["frame"] is None
    for key in ("force_mae", "force_max", "fnm_mae", "fnm_max"):
        assert metrics["f10"][f"frame.{key}"] == pytest.approx(frames[key][10])
        assert metrics["f10"][f"neighbours.{key}"] == pytest.approx(frames[key][10])  # its nearest frame is itself
        assert metrics["new"][f"frame.{key}"] is None
    assert metrics["f10"]["neighbours.ratio_bad_points"] == float(frames["force_mae"][10] > ev["force_mae"])
    labels, _, _ = cluster_conformations(aspirin.R, n_clusters=4, seed=0)
    per_cluster = cluster_force_metrics(frames, labels, ev["force_mae"])
    for start, frame in (("f10", 10), ("f42", 42)):
        c = int(labels[frame])
        assert info["starts"][start]["cluster"] == c
        row = list(per_cluster["cluster"]).index(c)
        for key in ("force_mae", "force_max", "fnm_mae", "fnm_max", "ratio_bad_points"):
            assert metrics[start][f"cluster.{key}"] == pytest.approx(per_cluster[key][row])
    wide, wide_info = start_conformation_metrics(ev, aspirin.R, {"f10": aspirin.R[10]}, start_frames={"f10": None},
                                                 n_clusters=4, n_neighbours=15)
    assert wide["f10"]["frame.force_mae"] is None and len(wide_info["starts"]["f10"]["neighbour_frames"]) == 15
    assert 10 in wide_info["starts"]["f10"]["neighbour_frames"]
    with pytest.raises(ValueError, match=r"start 'bad'.*\(21, 3\)"):
        start_conformation_metrics(ev, aspirin.R, {"bad": aspirin.R[0][:5]}, n_clusters=2)


def test_metric_sets_from_an_exported_model(aspirin, tmp_path):
    """The chain the CLI runs: evaluate_model on an exported TorchScript model -> metric sets -> correlation input."""
    import torch

    from openmlff.metrics.evaluation import evaluate_model
    from untrained_model import write_untrained_et

    torch.set_num_threads(1)
    data = aspirin.subset(np.arange(30))
    evaluations = {}
    for k in range(2):  # two tiny untrained ET models (different seeds), exported as MD runs them
        model = write_untrained_et(tmp_path / f"toy{k}.pt", aspirin, seed=k)
        evaluations[f"toy{k}"] = {"test": evaluate_model(model, data, batch_size=16)}
    metrics, info = model_metric_sets(evaluations)
    assert set(metrics) == {"toy0", "toy1"}
    assert metrics["toy0"]["test.force_mae"] == pytest.approx(evaluations["toy0"]["test"]["force_mae"])
    assert metrics["toy0"]["test.force_mae"] != pytest.approx(metrics["toy1"]["test.force_mae"])
    assert all(math.isfinite(v) for v in metrics["toy1"].values())
    starts, start_info = start_conformation_metrics(evaluations["toy0"]["test"], data.R, {"s3": data.R[3]},
                                                    n_clusters=3)
    assert starts["s3"]["frame.force_mae"] == pytest.approx(evaluations["toy0"]["test"]["frames"]["force_mae"][3])


def test_campaign_answer_names_the_best_metric_the_reference_rank_and_the_first_bonds():
    from openmlff.stability.correlation import campaign_answer

    row = lambda metric, rho: {"metric": metric, "metric_unit": "u", "stability_measure": "share_stable",  # noqa: E731
                               "spearman_rho": rho, "spearman_ci_low": rho - 0.2, "spearman_ci_high": rho + 0.1, "n": 4}
    document = {"stability_per_model": {"a": {"n_runs": 4, "n_stable": 3}, "b": {"n_runs": 4, "n_stable": 0}},
                "model_level": {"rows": [row("test.force_mae", -0.4), row("test.H.fnm_max", -0.9),
                                         row("val.force_max", 0.6), row("x", float("nan")),
                                         {**row("test.force_mae", -1.0), "stability_measure": "other"}]}}
    bond = lambda *elements: {"first_broken_bond": {"elements": list(elements), "atoms": [0, 1]}}  # noqa: E731
    answer = campaign_answer(document, [bond("H", "C"), bond("C", "H"), bond("O", "H"), {"first_broken_bond": None}])
    assert (answer["n_runs"], answer["n_stable"], answer["n_metrics"]) == (8, 3, 3)
    assert [b["metric"] for b in answer["best"]] == ["test.H.fnm_max", "val.force_max", "test.force_mae"]
    assert answer["reference"]["rank"] == 3 and answer["reference"]["spearman_rho"] == -0.4
    assert answer["first_broken_bonds"] == {"C–H": 2, "H–O": 1}
    assert answer["stable_per_model"] == {"a": "3/4", "b": "0/4"}
