"""Recorded streams: export River datasets, replay files into Kafka, record topics to files."""
