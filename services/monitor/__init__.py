"""Drift monitor: concept, covariate and prediction drift, published as alerts."""
