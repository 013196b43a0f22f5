"""Shared pieces: domain errors, DRF glue, health checks, base templates' helpers."""
