"""Does a force metric predict MD stability? Rank correlations and ROC analysis (docs/architecture.md "Correlation").

After Wang et al. (JCP 159, 035101, 2023), who found the global force MAE a poor predictor of
stability and fine-grained metrics (hydrogen FNM, maximum errors, the ratio of bad points of a
conformation cluster) better ones. Two levels:

* model level (`model_level_correlation`): one point per model, each force metric of the model
  against its stability over many runs (share of stable runs, median time to collapse);
* conformation level (`conformation_level_correlation`): one point per starting conformation,
  the error metrics of its cluster or neighbourhood against the fate of the runs started there:
  ROC AUC for "collapses within the horizon", and rank correlations with the per-start collapse
  rate and mean time to collapse.

Statistics (n pairs (x_k, y_k) after dropping pairs with a non-finite value):

    Spearman rho = Pearson correlation of the ranks of x and of y (average ranks for ties)
    Kendall tau-b = (n_c - n_d) / sqrt((n_0 - n_x)(n_0 - n_y)) with n_c, n_d the concordant and
        discordant pairs, n_0 = n(n-1)/2, n_x, n_y the pairs tied in x, in y
        (= Σ_{k<l} s^x_kl s^y_kl / sqrt(Σ_{k<l} |s^x_kl| Σ_{k<l} |s^y_kl|), s^x_kl = sign(x_k - x_l))
    ROC AUC = (1 / (n_+ n_-)) Σ_{i positive} Σ_{j negative} ( [s_i > s_j] + ½ [s_i = s_j] )
        = U / (n_+ n_-), the Mann-Whitney U of the positives' scores: the probability that a
        random positive (a collapse) scores higher than a random negative, ties counted ½.

Confidence intervals are percentile bootstrap intervals: the ((1-c)/2, (1+c)/2) quantiles of the
statistic over `n_bootstrap` resamples drawn with replacement by scipy.stats.bootstrap (pairs for
rank correlations; groups, e.g. all runs of one starting conformation, for the ROC AUC).
Resamples on which the statistic is undefined (all x or all y equal, a single class) are left
out and counted; scipy's own interval is not used, as it turns NaN as soon as one is. Percentile,
not BCa: BCa's jackknife acceleration is undefined for the same resamples, and earlier tables
report percentile intervals. Deterministic for a given seed. With fewer than 3 finite pairs, or
constant x or y, coefficients, p-values and intervals are NaN.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import stats

from ..core.errors import InputError
from .runs import run_outcome, stability_of_runs, start_runs

DEFAULT_N_BOOTSTRAP = 2000
DEFAULT_CONFIDENCE = 0.95
#: Stability measures of a model (keys of openmlff.stability.runs.stability_of_runs) and their units.
MODEL_STABILITY_MEASURES = {"share_stable": "fraction of runs", "median_time_to_collapse_ps": "ps"}
#: Stability measures of a starting conformation (computed from its runs here) and their units.
START_STABILITY_MEASURES = {"collapse_rate": "fraction of runs", "mean_time_to_collapse_ps": "ps"}
MIN_PAIRS = 3
#: The global metric every other is compared with (paired_rho_difference), and the keys its rows carry.
REFERENCE_METRIC = "test.force_mae"
PAIRED_KEYS = ("abs_rho_difference", "abs_rho_difference_ci_low", "abs_rho_difference_ci_high", "share_not_better")
_ELEMENTS_PER_BLOCK = 4_000_000  # bounds the temporary arrays of the vectorised bootstrap
_KENDALL_VECTORISED_MAX_N = 200  # above this, tau-b of each resample comes from scipy (O(n log n))

MODEL_LEVEL_NOTES = (
    "One point per model: a force metric of the model against its stability over its runs.",
    "Higher errors should mean less stability, so a metric that predicts stability has NEGATIVE rho and tau "
    "against share_stable and against median_time_to_collapse_ps.",
    "rho: Spearman rank correlation; tau: Kendall tau-b; p: two-sided p-values of scipy.stats.spearmanr "
    "(t approximation) and kendalltau (exact for small n without ties, else normal approximation).",
    "ci_low, ci_high: percentile bootstrap interval over models resampled with replacement; with few models "
    "the intervals are wide and p-values are not corrected for testing many metrics.",
    "median_time_to_collapse_ps: runs that did not collapse count as reaching the horizon (censored), so the "
    "median equals the horizon once half the runs are stable.",
)
CONFORMATION_LEVEL_NOTES = (
    "One point per starting conformation: the error metrics of its cluster, neighbourhood or own frame "
    "against the fate of the runs started there.",
    "roc_auc: how well the metric, used as a score, separates runs that collapsed within the horizon from runs "
    "that did not (0.5: no skill, 1: larger metric always means collapse, below 0.5: the reverse); runs are "
    "the samples, each scored with its start's metric, ties counted 1/2. It depends on the metric only and is "
    "repeated in each row of the metric.",
    "roc_auc_ci_low/high: percentile bootstrap over starting conformations (all runs of a start resampled "
    "together, since they share the score).",
    "rho, tau against collapse_rate should be POSITIVE and against mean_time_to_collapse_ps NEGATIVE for a metric "
    "that predicts collapse; intervals from a bootstrap over starts.",
    "mean_time_to_collapse_ps: runs that did not collapse count with their censoring time (the horizon).",
    "With few starts or heavily tied outcomes (e.g. nearly every run collapses) percentile intervals are rough: "
    "they can be degenerate or even leave out the point estimate.",
)


# --- rank correlations ------------------------------------------------------------------------------

def _finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise InputError(f"x has {x.size} values and y {y.size}; expected one y per x")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep], int((~keep).sum())


def spearman_rows(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair of X and Y (b, n): Pearson correlation of average ranks; NaN for a constant row."""
    rx = stats.rankdata(X, axis=1)
    ry = stats.rankdata(Y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(1) / denom
    return np.where(denom > 0, np.clip(rho, -1.0, 1.0), np.nan)


def kendall_tau_b_rows(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row pair of X and Y (b, n) by the sign formula of the module docstring; NaN for a
    constant row. Vectorised over pairs for small n, scipy's O(n log n) algorithm row by row for large n."""
    b, n = X.shape
    if n > _KENDALL_VECTORISED_MAX_N:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.array([stats.kendalltau(x, y).statistic for x, y in zip(X, Y)], dtype=np.float64)
    i, j = np.triu_indices(n, k=1)
    out = np.empty(b)
    block = max(1, _ELEMENTS_PER_BLOCK // max(1, i.size))
    for start in range(0, b, block):
        sx = np.sign(X[start:start + block, i] - X[start:start + block, j])
        sy = np.sign(Y[start:start + block, i] - Y[start:start + block, j])
        denom = np.sqrt(np.abs(sx).sum(1) * np.abs(sy).sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = (sx * sy).sum(1) / denom
        out[start:start + block] = np.where(denom > 0, tau, np.nan)
    return out


def percentile_interval(values, confidence: float) -> tuple[float, float, int]:
    """(low, high, n_valid): the ((1-c)/2, (1+c)/2) quantiles of the finite values; NaN bounds if none is finite."""
    values = np.asarray(values, dtype=np.float64)
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return math.nan, math.nan, 0
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(valid, [alpha, 1.0 - alpha])
    return float(low), float(high), int(valid.size)


def _check_bootstrap_settings(n_bootstrap: int, confidence: float) -> None:
    if int(n_bootstrap) < 0:
        raise InputError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence}")


def _bootstrap_distribution(data, statistic, n_bootstrap: int, seed: int, paired: bool = False) -> np.ndarray:
    """`statistic(*resamples)`, vectorised over rows (b, n), on `n_bootstrap` resamples of `data` drawn by
    scipy.stats.bootstrap from default_rng(seed) in batches that keep the arrays small. Undefined resamples stay
    NaN, for `percentile_interval` to leave out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # its interval is NaN with NaN resamples
        result = stats.bootstrap(data, lambda *samples, axis: statistic(*samples), n_resamples=int(n_bootstrap),
                                 batch=max(1, _ELEMENTS_PER_BLOCK // len(data[0])), vectorized=True, paired=paired,
                                 method="percentile", random_state=np.random.default_rng(seed))
    return np.asarray(result.bootstrap_distribution)


def rank_correlations(x, y, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE,
                      seed: int = 0) -> dict:
    """Spearman rho and Kendall tau-b of y against x (module docstring) with two-sided p-values (scipy.stats
    spearmanr, kendalltau) and percentile bootstrap intervals over resampled (x, y) pairs.

    Pairs with a non-finite value are dropped first (n_dropped). Returns a JSON-ready dict: n, n_dropped,
    spearman_rho, spearman_p, spearman_ci_low, spearman_ci_high, kendall_tau, kendall_p, kendall_ci_low,
    kendall_ci_high, n_bootstrap, n_bootstrap_valid (resamples on which rho was defined), confidence.
    """
    _check_bootstrap_settings(n_bootstrap, confidence)
    x, y, dropped = _finite_pairs(x, y)
    n = int(x.size)
    out = {"n": n, "n_dropped": dropped, "spearman_rho": math.nan, "spearman_p": math.nan,
           "spearman_ci_low": math.nan, "spearman_ci_high": math.nan, "kendall_tau": math.nan, "kendall_p": math.nan,
           "kendall_ci_low": math.nan, "kendall_ci_high": math.nan, "n_bootstrap": int(n_bootstrap),
           "n_bootstrap_valid": 0, "confidence": float(confidence)}
    if n < MIN_PAIRS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties and small samples; the numbers stay right
        spearman = stats.spearmanr(x, y)
        kendall = stats.kendalltau(x, y)
    out.update(spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue),
               kendall_tau=float(kendall.statistic), kendall_p=float(kendall.pvalue))
    if n_bootstrap:
        # One seed for both: rho and tau come from the same resampled pairs.
        rho = _bootstrap_distribution((x, y), spearman_rows, n_bootstrap, seed, paired=True)
        tau = _bootstrap_distribution((x, y), kendall_tau_b_rows, n_bootstrap, seed, paired=True)
        low, high, valid = percentile_interval(rho, confidence)
        out.update(spearman_ci_low=low, spearman_ci_high=high, n_bootstrap_valid=valid)
        low, high, _ = percentile_interval(tau, confidence)
        out.update(kendall_ci_low=low, kendall_ci_high=high)
    return out


def paired_rho_difference(x, reference, y, n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                          confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> dict:
    """Does metric x rank y better than the reference metric? |rho(x, y)| - |rho(reference, y)| (Spearman) with a
    paired percentile bootstrap: both rhos come from the same resampled models, so the interval holds the
    correlation between the two metrics (docs/study.md, H1). Items with a non-finite value in any of the three are
    dropped first.

    Returns n, abs_rho_difference, its ci_low and ci_high, share_not_better (the resamples' share with a difference
    <= 0: a one-sided bootstrap p-value for "x ranks better"), n_bootstrap_valid, confidence.
    """
    _check_bootstrap_settings(n_bootstrap, confidence)
    x, r, y = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (x, reference, y))
    if not x.size == r.size == y.size:
        raise InputError(f"x, reference and y have {x.size}, {r.size} and {y.size} values; expected one each per item")
    keep = np.isfinite(x) & np.isfinite(r) & np.isfinite(y)
    x, r, y = x[keep], r[keep], y[keep]
    out = {"n": int(x.size), "abs_rho_difference": math.nan, "abs_rho_difference_ci_low": math.nan,
           "abs_rho_difference_ci_high": math.nan, "share_not_better": math.nan, "n_bootstrap_valid": 0,
           "confidence": float(confidence)}

    def difference(a, b, c):
        return np.abs(spearman_rows(a, c)) - np.abs(spearman_rows(b, c))

    if x.size < MIN_PAIRS or np.ptp(y) == 0 or np.ptp(x) == 0 or np.ptp(r) == 0:
        return out
    out["abs_rho_difference"] = float(difference(x[None], r[None], y[None])[0])
    if n_bootstrap:
        values = _bootstrap_distribution((x, r, y), difference, n_bootstrap, seed, paired=True)
        low, high, valid = percentile_interval(values, confidence)
        finite = values[np.isfinite(values)]
        out.update(abs_rho_difference_ci_low=low, abs_rho_difference_ci_high=high, n_bootstrap_valid=valid,
                   share_not_better=float(np.mean(finite <= 0)) if finite.size else math.nan)
    return out


# --- ROC ----------------------------------------------------------------------------------------------

def _scores_and_labels(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite scores, boolean labels and the mask of kept samples; ValueError for labels other than 0/1/bool."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    raw = np.asarray(labels).reshape(-1)
    if raw.size != s.size:
        raise InputError(f"{s.size} scores but {raw.size} labels; expected one label per score")
    if raw.dtype != bool:
        values = set(np.unique(raw).tolist())
        if not values <= {0, 1}:
            raise InputError(f"labels must be booleans or 0/1 (1 = collapsed), got values {sorted(values)}")
    keep = np.isfinite(s)
    return s[keep], raw.astype(bool)[keep], keep


def roc_auc(scores, labels) -> float:
    """ROC AUC of `scores` for the positive class of `labels` (True/1): U / (n_+ n_-), U from
    scipy.stats.mannwhitneyu, i.e. the pair formula of the module docstring with ties counted 1/2.
    Samples with a non-finite score are dropped; NaN without positives or without negatives."""
    s, y, _ = _scores_and_labels(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # The asymptotic method skips the exact null distribution, which only the p-value (unused) needs.
    u = stats.mannwhitneyu(s[y], s[~y], method="asymptotic").statistic
    return float(u / (n_pos * n_neg))


def roc_curve(scores, labels) -> dict:
    """The ROC curve {"fpr", "tpr", "thresholds"} (arrays): for each threshold t (+inf, then the distinct scores
    from the largest down) the shares of negatives (fpr) and positives (tpr) with score >= t. From (0, 0) to
    (1, 1); its trapezoid area is `roc_auc` (tied scores give a diagonal segment, the ½ of the tie rule).
    InputError without positives or negatives."""
    s, y, _ = _scores_and_labels(scores, labels)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if pos.size == 0 or neg.size == 0:
        raise InputError(f"a ROC curve needs both classes; got {pos.size} positives and {neg.size} negatives")
    thresholds = np.unique(s)[::-1]
    tpr = (pos.size - np.searchsorted(pos, thresholds, side="left")) / pos.size
    fpr = (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size
    return {"fpr": np.concatenate([[0.0], fpr]), "tpr": np.concatenate([[0.0], tpr]),
            "thresholds": np.concatenate([[np.inf], thresholds])}


def roc_auc_bootstrap(scores, labels, groups=None, n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                      confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> dict:
    """ROC AUC with a percentile bootstrap interval, resampling groups of samples with replacement.

    groups: one key per sample; all samples of a group are drawn together (e.g. the runs of one
    starting conformation, which share its score and are not independent). None: each sample is
    its own group. A resampled group drawn c times weighs c in the pair formula,
    AUC* = Σ_{i+, j-} w_i w_j K(s_i, s_j) / (Σ_{i+} w_i)(Σ_{j-} w_j), K = 1, ½, 0 for s_i >, =, < s_j;
    resamples without both classes are left out. Returns a JSON-ready dict: roc_auc, roc_auc_ci_low,
    roc_auc_ci_high, n_positive, n_negative, n_groups, n_bootstrap, n_bootstrap_valid, confidence.
    """
    _check_bootstrap_settings(n_bootstrap, confidence)
    s, y, keep = _scores_and_labels(scores, labels)
    if groups is None:
        group_index = np.arange(s.size)
    else:
        keys = np.asarray(groups, dtype=object).reshape(-1)
        if keys.size != keep.size:
            raise InputError(f"{keys.size} group keys for {keep.size} samples; expected one per sample")
        _, group_index = np.unique(keys[keep].astype(str), return_inverse=True)
    n_groups = int(group_index.max()) + 1 if group_index.size else 0
    out = {"roc_auc": roc_auc(s, y), "roc_auc_ci_low": math.nan, "roc_auc_ci_high": math.nan,
           "n_positive": int(y.sum()), "n_negative": int((~y).sum()), "n_groups": n_groups,
           "n_bootstrap": int(n_bootstrap), "n_bootstrap_valid": 0, "confidence": float(confidence)}
    if not n_bootstrap or math.isnan(out["roc_auc"]):
        return out
    # Samples of one group with one score and label are one weighted entry: the pair matrix stays small.
    entries, multiplicity = np.unique(np.stack([group_index, s, y]).T, axis=0, return_counts=True)
    e_group, e_score, e_label = entries[:, 0].astype(np.int64), entries[:, 1], entries[:, 2].astype(bool)
    pos, neg = np.flatnonzero(e_label), np.flatnonzero(~e_label)
    K = (np.sign(e_score[pos][:, None] - e_score[neg][None, :]) + 1.0) / 2.0  # (P, N): 1, ½, 0

    def weighted_auc(idx):
        """AUC* of each row of resampled group indices (b, n_groups)."""
        b = idx.shape[0]
        counts = np.bincount((idx + n_groups * np.arange(b)[:, None]).ravel(), minlength=b * n_groups)
        counts = counts.reshape(b, n_groups).astype(np.float64)  # times each group was drawn
        w_pos = counts[:, e_group[pos]] * multiplicity[pos]
        w_neg = counts[:, e_group[neg]] * multiplicity[neg]
        denom = w_pos.sum(1) * w_neg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, ((w_pos @ K) * w_neg).sum(1) / denom, np.nan)

    if n_groups > 1:  # the groups are the sample scipy resamples; each AUC* is computed from the drawn groups
        aucs = _bootstrap_distribution((np.arange(n_groups),), weighted_auc, n_bootstrap, seed)
    else:  # scipy needs two observations; every resample of one group is the data itself
        aucs = np.full(int(n_bootstrap), out["roc_auc"])
    low, high, valid = percentile_interval(aucs, confidence)
    out.update(roc_auc_ci_low=low, roc_auc_ci_high=high, n_bootstrap_valid=valid)
    return out


# --- correlation tables -------------------------------------------------------------------------------

def _metric_value(value, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{where}: expected a number (or None), got {value!r}")
    return float(value)


def _metric_names(per_item: Mapping[str, Mapping[str, object]]) -> list[str]:
    """All metric names, in order of first appearance."""
    return list(dict.fromkeys(name for metrics in per_item.values() for name in metrics))


def model_level_correlation(model_metrics: Mapping[str, Mapping[str, float]],
                            model_stability: Mapping[str, Mapping[str, float]], *,
                            measures: Iterable[str] = tuple(MODEL_STABILITY_MEASURES),
                            metric_units: Mapping[str, str] | None = None, n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                            confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                            reference_metric: str = REFERENCE_METRIC) -> dict:
    """Each metric of the models against each stability measure: one row per (metric, measure).

    model_metrics: {model: {metric: value}} (metric_sets.model_metric_sets); model_stability: {model:
    stability_of_runs dict}. Models present in both are used; a model lacking a metric (or None/NaN) is left
    out of its rows. Each row: metric, metric_unit, stability_measure, stability_unit and `rank_correlations`.
    A row of a metric other than `reference_metric` (the global test force MAE) also holds the paired comparison
    with it (`paired_rho_difference`, keys prefixed versus_reference_), when the models have it.
    Returns {"level": "model", "models", "metrics", "stability_measures", "rows", "notes", "settings"}.
    """
    measures = list(measures)
    models = [m for m in model_metrics if m in model_stability]
    if not models:
        raise InputError(f"no model has both metrics and stability: metrics for {sorted(model_metrics)}, "
                         f"stability for {sorted(model_stability)}")
    used = {m: model_metrics[m] for m in models}
    units = dict(metric_units or {})
    rows = []
    for measure in measures:
        missing = [m for m in models if measure not in model_stability[m]]
        if missing:
            raise InputError(f"stability measure {measure!r} missing for models {missing}; "
                             f"expected keys like {list(MODEL_STABILITY_MEASURES)}")
    def values(metric):
        return [_metric_value(used[m].get(metric), f"model {m!r}, metric {metric!r}") for m in models]

    reference = values(reference_metric) if reference_metric in _metric_names(used) else None
    for metric in _metric_names(used):
        x = values(metric)
        for k, measure in enumerate(measures):
            y = [_metric_value(model_stability[m][measure], f"model {m!r}, stability {measure!r}") for m in models]
            row = {"metric": metric, "metric_unit": units.get(metric, ""), "stability_measure": measure,
                   "stability_unit": MODEL_STABILITY_MEASURES.get(measure, ""),
                   **rank_correlations(x, y, n_bootstrap, confidence, seed + k)}
            if reference is not None and metric != reference_metric:
                paired = paired_rho_difference(x, reference, y, n_bootstrap, confidence, seed + k)
                row.update({f"versus_reference_{key}": paired[key] for key in PAIRED_KEYS})
            rows.append(row)
    return {"level": "model", "models": models, "metrics": _metric_names(used), "stability_measures": measures,
            "rows": rows, "notes": list(MODEL_LEVEL_NOTES),
            "settings": {"n_bootstrap": int(n_bootstrap), "confidence": float(confidence), "seed": seed,
                         "reference_metric": reference_metric}}


def per_start_outcomes(runs: Iterable[tuple]) -> dict[str, dict]:
    """{start_id: {n_runs, n_collapsed, collapse_rate, mean_time_to_collapse_ps}} from runs given as
    (start_id, collapsed_within_horizon, time_ps) with time_ps the collapse time, or the censoring
    time (the horizon) of a run that did not collapse (openmlff.stability.runs.run_outcome)."""
    grouped: dict[str, list[tuple[bool, float]]] = {}
    for k, run in enumerate(runs):
        try:
            start, collapsed, time_ps = run
        except (TypeError, ValueError):
            raise InputError(f"run {k}: expected (start_id, collapsed_within_horizon, time_ps), got {run!r}") from None
        time_ps = _metric_value(time_ps, f"run {k} (start {start!r}), time_ps")
        if not math.isfinite(time_ps) or time_ps < 0:
            raise InputError(f"run {k} (start {start!r}): time_ps must be a finite time >= 0 in ps, got {time_ps}")
        grouped.setdefault(str(start), []).append((bool(collapsed), time_ps))
    return {start: {"n_runs": len(outcomes), "n_collapsed": sum(c for c, _ in outcomes),
                    "collapse_rate": float(np.mean([c for c, _ in outcomes])),
                    "mean_time_to_collapse_ps": float(np.mean([t for _, t in outcomes]))}
            for start, outcomes in grouped.items()}


def conformation_level_correlation(start_metrics: Mapping[str, Mapping[str, float]], runs: Iterable[tuple], *,
                                   measures: Iterable[str] = tuple(START_STABILITY_MEASURES),
                                   metric_units: Mapping[str, str] | None = None,
                                   n_bootstrap: int = DEFAULT_N_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE,
                                   seed: int = 0) -> dict:
    """The metrics of the starting conformations against the fate of their runs (one model's runs).

    start_metrics: {start_id: {metric: value}} (metric_sets.start_conformation_metrics); runs: (start_id,
    collapsed_within_horizon, time_ps) per run. Per metric: ROC AUC of the start's metric as a score for the
    collapse of each run (bootstrap over starts), and its rank correlations with each per-start measure
    (`per_start_outcomes`); a start without a value is left out. One row per (metric, measure): metric,
    metric_unit, stability_measure, stability_unit, n_starts, n_runs, n_collapsed, roc_auc, roc_auc_ci_low,
    roc_auc_ci_high and `rank_correlations` (n = starts). Returns {"level": "conformation", "starts",
    "per_start", "metrics", "stability_measures", "rows", "roc_curves": {metric: {"fpr", "tpr"}}, "notes", "settings"}.
    """
    runs = [tuple(r) for r in runs]
    outcomes = per_start_outcomes(runs)
    metrics_by_start = {str(k): v for k, v in start_metrics.items()}
    unknown = sorted(set(outcomes) - set(metrics_by_start))
    if unknown:
        raise InputError(f"runs start from conformations {unknown} that have no metrics; "
                         f"start_metrics has {sorted(metrics_by_start)}")
    starts = [s for s in metrics_by_start if s in outcomes]
    measures = list(measures)
    bad = [m for m in measures if m not in START_STABILITY_MEASURES]
    if bad:
        raise InputError(f"unknown per-start stability measures {bad}; expected some of {list(START_STABILITY_MEASURES)}")
    units = dict(metric_units or {})
    run_start = [str(r[0]) for r in runs]
    run_collapsed = np.array([bool(r[1]) for r in runs])
    used = {s: metrics_by_start[s] for s in starts}
    rows, curves = [], {}
    for metric in _metric_names(used):
        value = {s: _metric_value(used[s].get(metric), f"start {s!r}, metric {metric!r}") for s in starts}
        run_scores = np.array([value[s] for s in run_start])
        roc = roc_auc_bootstrap(run_scores, run_collapsed, groups=run_start, n_bootstrap=n_bootstrap,
                                confidence=confidence, seed=seed)
        if not math.isnan(roc["roc_auc"]):
            curve = roc_curve(run_scores, run_collapsed)
            curves[metric] = {"fpr": curve["fpr"].tolist(), "tpr": curve["tpr"].tolist()}
        common = {"metric": metric, "metric_unit": units.get(metric, ""),
                  "n_starts": sum(math.isfinite(value[s]) for s in starts),
                  "n_runs": roc["n_positive"] + roc["n_negative"], "n_collapsed": roc["n_positive"],
                  **{key: roc[key] for key in ("roc_auc", "roc_auc_ci_low", "roc_auc_ci_high")}}
        x = [value[s] for s in starts]
        for k, measure in enumerate(measures):
            y = [outcomes[s][measure] for s in starts]
            rows.append({**common, "stability_measure": measure, "stability_unit": START_STABILITY_MEASURES[measure],
                         **rank_correlations(x, y, n_bootstrap, confidence, seed + k)})
    return {"level": "conformation", "starts": starts, "per_start": {s: outcomes[s] for s in starts},
            "metrics": _metric_names(used), "stability_measures": measures, "rows": rows, "roc_curves": curves,
            "notes": list(CONFORMATION_LEVEL_NOTES),
            "settings": {"n_bootstrap": int(n_bootstrap), "confidence": float(confidence), "seed": seed}}


def strongest_rows(rows: list[dict], key: str = "spearman_rho", per: str = "stability_measure") -> list[int]:
    """Indices of the rows with the largest |key| (finite) for each value of `per`: the strongest metric
    for each stability measure, e.g. to highlight in a report."""
    best: dict[object, int] = {}
    for k, row in enumerate(rows):
        value = row.get(key)
        if value is None or not math.isfinite(value):
            continue
        group = row.get(per)
        if group not in best or abs(value) > abs(rows[best[group]][key]):
            best[group] = k
    return sorted(best.values())


def campaign_answer(document: Mapping, diagnoses: Iterable[Mapping] = (), measure: str = "share_stable",
                    reference_metric: str = REFERENCE_METRIC) -> dict:
    """What a reader asks first of a campaign's correlation document: how many runs held, which metric ranks the
    models' `measure` best (|Spearman rho|, with its interval) and where `reference_metric` (the global test force
    MAE) ranks, and which bond broke first in the collapsed runs (element pairs, most frequent first)."""
    stability = document.get("stability_per_model") or {}
    n_runs = sum(int(s["n_runs"]) for s in stability.values())
    n_stable = sum(int(s["n_stable"]) for s in stability.values())
    rows = [r for r in (document.get("model_level") or {}).get("rows", [])
            if r.get("stability_measure") == measure and r.get("spearman_rho") is not None
            and math.isfinite(r["spearman_rho"])]
    ranked = sorted(rows, key=lambda r: -abs(r["spearman_rho"]))
    pick = ("metric", "metric_unit", "spearman_rho", "spearman_ci_low", "spearman_ci_high", "n",
            *(f"versus_reference_{key}" for key in PAIRED_KEYS))
    reference = next(((k + 1, r) for k, r in enumerate(ranked) if r["metric"] == reference_metric), None)
    bonds = Counter("–".join(sorted(d["first_broken_bond"]["elements"])) for d in diagnoses
                    if d.get("first_broken_bond"))
    return {"n_runs": n_runs, "n_stable": n_stable, "measure": measure, "n_metrics": len(ranked),
            "stable_per_model": {m: f"{s['n_stable']}/{s['n_runs']}" for m, s in stability.items()},
            "best": [{k: r.get(k) for k in pick} for r in ranked[:3]],
            "reference": None if reference is None else {"rank": reference[0], **{k: reference[1].get(k) for k in pick}},
            "first_broken_bonds": dict(bonds.most_common())}


# --- a whole campaign ---------------------------------------------------------------------------------

def campaign_correlation(runs: Iterable[Mapping], horizon_ps: float, *,
                         model_metrics: Mapping[str, Mapping[str, float]] | None = None,
                         start_metrics: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
                         metric_units: Mapping[str, str] | None = None,
                         start_metric_units: Mapping[str, str] | None = None, units: Mapping[str, str] | None = None,
                         n_bootstrap: int = DEFAULT_N_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE,
                         seed: int = 0) -> dict:
    """The correlation document of a campaign (its keys in openmlff.report.correlation_outputs): stability per
    model and per start, the model level (with model_metrics) and the conformation level of each model with
    start metrics and runs with a start.

    runs: one {"run_id", "model", "start" (None if unknown), "summary" (its summary.json dict)} per finished run.
    model_metrics: {model: {metric: value}} (metric_sets.model_metric_sets); start_metrics: {model: {start_id:
    {metric: value}}} (metric_sets.start_conformation_metrics per model).
    """
    by_model: dict[str, dict[str, Mapping]] = {}
    starts_by_model: dict[str, list[tuple[str, Mapping]]] = {}
    for k, run in enumerate(runs):
        missing = [key for key in ("run_id", "model", "summary") if key not in run]
        if missing:
            raise InputError(f"run {k}: lacks {missing}; expected {{'run_id', 'model', 'start', 'summary'}}")
        model, run_id = str(run["model"]), str(run["run_id"])
        if run_id in by_model.setdefault(model, {}):
            raise InputError(f"run id {run_id!r} appears twice for model {model!r}")
        by_model[model][run_id] = run["summary"]
        if run.get("start") is not None:
            starts_by_model.setdefault(model, []).append((str(run["start"]), run["summary"]))
    if not by_model:
        raise InputError("no finished runs: the correlation needs runs with a summary.json")
    stability = {model: stability_of_runs(summaries, horizon_ps) for model, summaries in by_model.items()}
    per_start, conformation = {}, {}
    for model, entries in starts_by_model.items():
        start_outcomes = start_runs(entries, horizon_ps)
        per_start[model] = per_start_outcomes(start_outcomes)
        if start_metrics and model in start_metrics:
            conformation[model] = conformation_level_correlation(
                start_metrics[model], start_outcomes, metric_units=start_metric_units, n_bootstrap=n_bootstrap,
                confidence=confidence, seed=seed)
    model_level = model_level_correlation(model_metrics, stability, metric_units=metric_units, n_bootstrap=n_bootstrap,
                                          confidence=confidence, seed=seed) if model_metrics else None
    return {"units": dict(units or {}), "horizon_ps": float(horizon_ps),
            "model_metrics": {m: dict(v) for m, v in (model_metrics or {}).items()},
            "metric_units": dict(metric_units or {}), "start_metric_units": dict(start_metric_units or {}),
            "stability_per_model": stability, "stability_per_start": per_start, "model_level": model_level,
            "conformation_level": conformation, "n_runs": sum(len(v) for v in by_model.values())}


#: The metrics `similar_error_ranking` compares with the force MAE (names of metric_sets.model_metric_sets).
FINE_GRAINED_METRICS = ("test.H.fnm_mae", "test.H.fnm_max", "test.fnm_max", "test.force_max", "test.bad_frame_share",
                        "test.worst_frame_force_mae")


def similar_error_ranking(model_metrics: Mapping[str, Mapping[str, float]],
                          model_stability: Mapping[str, Mapping[str, float]], *, mae_metric: str = REFERENCE_METRIC,
                          metrics: Iterable[str] = FINE_GRAINED_METRICS, tolerance: float = 0.25,
                          measures: Iterable[str] = ("share_stable", "mean_time_to_collapse_ps"),
                          min_models: int = 4) -> dict:
    """Among models whose `mae_metric` lies within `tolerance` (relative) of the models' median, Spearman rho
    of the MAE and of each fine-grained metric against each stability measure: can the fine-grained
    metrics tell apart what the MAE cannot? `better_than_mae` lists, per measure, the metrics with a
    more negative rho than the MAE's (larger error, less stable). Fewer than `min_models` similar
    models: no rows, and a note saying so.
    """
    models = [m for m in model_metrics if m in model_stability and mae_metric in model_metrics[m]
              and model_metrics[m][mae_metric] is not None and math.isfinite(model_metrics[m][mae_metric])]
    mae = {m: float(model_metrics[m][mae_metric]) for m in models}
    median = float(np.median(list(mae.values()))) if mae else math.nan
    similar = [m for m in models if abs(mae[m] - median) <= tolerance * median]
    out = {"mae_metric": mae_metric, "tolerance": tolerance, "median_mae": median, "models": similar, "rows": [],
           "better_than_mae": {}}
    if len(similar) < min_models:
        out["note"] = (f"only {len(similar)} models within ±{tolerance:.0%} of the median {mae_metric}: "
                       f"too few (< {min_models}) to rank metrics among models of similar MAE")
        return out
    for measure in measures:
        y = np.array([float(model_stability[m][measure]) for m in similar])
        rhos = {}
        for metric in (mae_metric, *metrics):
            rank = rank_correlations([model_metrics[m].get(metric) for m in similar], y, n_bootstrap=0)
            rhos[metric] = rank["spearman_rho"]
            out["rows"].append({"measure": measure, "metric": metric, "spearman_rho": rhos[metric],
                                "n_models": rank["n"]})
        out["better_than_mae"][measure] = [m for m in metrics if math.isfinite(rhos[m]) and math.isfinite(rhos[mae_metric])
                                           and rhos[m] < rhos[mae_metric]]
    return out


#: The fixed window of the committee alarm's unbiased score (docs/study.md, H3), ps.
ALARM_WINDOW_PS = 1.0


def windowed_trust_alarm(runs: Iterable[Mapping], horizon_ps: float, window_ps: float = ALARM_WINDOW_PS,
                         n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict | None:
    """The committee alarm scored without run-length bias: every run that lived past `window_ps` is scored by its
    largest force spread within the first `window_ps`, and the outcome is a collapse after the window (within the
    horizon). Every run is judged on the same window, so a run that collapses early cannot score low for want of
    reports. runs: {"summary", "start", "spread_series": (times ps, spreads kcal/mol/Å)}; None when none has one.

    Returns window_ps, n_runs (scored), n_excluded (ended within the window), n_collapsed_later, unit, and roc
    (roc_auc_bootstrap, starts resampled)."""
    scored, excluded = [], 0
    for k, run in enumerate(runs):
        series = run.get("spread_series")
        if series is None:
            continue
        collapsed, t, _ = run_outcome(run["summary"], horizon_ps, str(run.get("run_id", k)))
        times, spread = (np.asarray(v, dtype=np.float64) for v in series)
        inside = times <= window_ps * (1 + 1e-9)
        if t <= window_ps or not inside.any():
            excluded += 1
            continue
        scored.append((float(spread[inside].max()), collapsed, run.get("start")))
    if not scored and not excluded:
        return None
    score, collapsed, starts = (list(v) for v in zip(*scored)) if scored else ([], [], [])
    return {"window_ps": float(window_ps), "n_runs": len(scored), "n_excluded": excluded,
            "n_collapsed_later": int(sum(collapsed)), "unit": "kcal/mol/Å",
            "roc": roc_auc_bootstrap(np.asarray(score), np.asarray(collapsed, dtype=bool), groups=starts,
                                     n_bootstrap=n_bootstrap, seed=seed) if scored else None}


def trust_alarm(runs: Iterable[Mapping], horizon_ps: float, n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                seed: int = 0) -> dict | None:
    """Does a committee's force spread predict collapse, and how early? From runs {"summary", "start"} whose
    summaries carry max_force_uncertainty_kcal_per_mol_per_A (openmlff.md.trust); None when none does.

    roc: ROC AUC of each run's largest spread for "collapsed within the horizon" (bootstrap over starts);
    lead_times_ps: collapse_time_ps - first_untrusted_time_ps for each collapsed run that had crossed the
    threshold (positive: the alarm came first); warned_before_collapse: share of collapses with an alarm
    at or before them; false_alarms: runs without a collapse within the horizon that were untrusted.
    Runs stopped when untrusted never collapse, so they give no lead time: run without the stop to measure it.
    The run's largest spread is biased by its length (a run that collapses early has fewer reports);
    `fixed_window` (windowed_trust_alarm, from runs with a spread_series) is not.
    """
    with_trust = [r for r in runs if r["summary"].get("max_force_uncertainty_kcal_per_mol_per_A") is not None]
    if not with_trust:
        return None
    outcomes = [run_outcome(r["summary"], horizon_ps, str(r.get("run_id", k))) for k, r in enumerate(with_trust)]
    collapsed = np.array([o[0] for o in outcomes])
    score = np.array([float(r["summary"]["max_force_uncertainty_kcal_per_mol_per_A"]) for r in with_trust])
    first = [r["summary"].get("first_untrusted_time_ps") for r in with_trust]
    leads = [o[1] - f for o, f in zip(outcomes, first) if o[0] and f is not None]
    n_collapsed = int(collapsed.sum())
    return {
        "n_runs": len(with_trust), "n_collapsed": n_collapsed, "unit": "kcal/mol/Å",
        "roc": roc_auc_bootstrap(score, collapsed, groups=[r.get("start") for r in with_trust],
                                 n_bootstrap=n_bootstrap, seed=seed),
        "lead_times_ps": leads,
        "median_lead_time_ps": float(np.median(leads)) if leads else None,
        "warned_before_collapse": (sum(lead >= 0 for lead in leads) / n_collapsed) if n_collapsed else None,
        "false_alarms": int(sum(1 for c, f in zip(collapsed, first) if not c and f is not None)),
        "stopped_untrusted": int(sum(bool(r["summary"].get("stopped_untrusted")) for r in with_trust)),
        "fixed_window": windowed_trust_alarm(with_trust, horizon_ps, n_bootstrap=n_bootstrap, seed=seed),
    }
