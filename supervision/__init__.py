"""Supervision: actor base, supervisors with restart strategies, the daemon root."""
