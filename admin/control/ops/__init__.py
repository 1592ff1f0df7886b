"""The control operations by subject (config edits, auth, faults, runtime,
saving and reloading), gathered into one op table by
:class:`pyscst.admin.control.operations.Controller`.
"""
