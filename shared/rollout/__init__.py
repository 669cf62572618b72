"""Rollout of models to traffic: which entities a challenger serves, and when the evidence
says to promote it (issue 25). Pure logic: no Kafka, no Redis."""
