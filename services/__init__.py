"""Headwater services: one package per service, plus the `headwater` CLI."""
