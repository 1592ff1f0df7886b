"""Supervision: the daemon root, which builds the actor tree, runs and stops it."""
