"""Learner service: test-then-train with every model of a pipeline spec."""
