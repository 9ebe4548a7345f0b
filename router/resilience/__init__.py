"""Retries, circuit breakers and health probes."""
