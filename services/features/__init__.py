"""Features service: windowed per-entity features over event time."""
