"""The configuration model: TOML files parsed, checked and resolved into the frozen
records the daemon runs from, and edited in place by the control plane.

Below both the control server and the client: neither imports the other, both
import this (import-linter contract in pyproject.toml).
"""
