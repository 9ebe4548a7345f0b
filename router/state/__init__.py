"""Shared state behind one interface: in memory by default, Redis for several replicas."""
