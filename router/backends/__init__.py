"""Backends: one module per wire protocol, all behind `base.Backend`."""
