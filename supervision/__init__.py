"""Supervision: the daemon root, which builds the actor tree, runs and stops it, and
the ``pyscst`` command (``cli.py``) that starts it."""
