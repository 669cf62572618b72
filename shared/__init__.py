"""Headwater's common library: settings, codec, Kafka and Redis adapters, local stack."""
