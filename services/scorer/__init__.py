"""Scorer: stateless replicas that publish predictions from the learner's model snapshot."""
