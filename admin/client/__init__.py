"""The operator's side of the control socket: the ``pyscst admin`` one-shot CLI and
the ``pyscst console`` shell. Talks to the daemon only through
:mod:`pyscst.admin.control.protocol`.
"""
