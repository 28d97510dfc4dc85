"""MD stability as statistics: runs.py, the outcome of each run and the stability of a set of runs (shares with
Wilson intervals, Kaplan-Meier, log-rank); correlation.py, force metrics against stability (rank correlations
with bootstrap intervals, ROC AUC) and a campaign's answer. Force metrics themselves are metrics/."""
