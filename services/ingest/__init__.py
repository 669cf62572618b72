"""Ingest: validation, normalisation, deduplication and dead letters for producer input."""
