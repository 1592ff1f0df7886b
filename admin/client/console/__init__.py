"""``pyscst console``: the interactive shell over the control socket (prompt,
completion, the object tree as directories, rendering).
"""
