"""Faithful local simulators of both providers (FastAPI apps), used by default and by tests."""
