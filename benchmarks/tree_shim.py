"""Import another checkout's ``pyscst`` instead of this one's, for A/B counts.

The editable install maps each ``pyscst.<package>`` to a folder at the top of
the repository (``[tool.setuptools.package-dir]``). Putting another tree on
PYTHONPATH therefore swaps only ``pyscst/__init__.py``: every subpackage is
still found through the editable finder, i.e. in *this* tree, and an A/B
comparison silently measures the same code twice. This builds a throwaway
folder whose ``pyscst/`` links the other tree's package folders as that
tree's own pyproject maps them; put the folder first on PYTHONPATH::

    PYTHONPATH=$(python benchmarks/tree_shim.py /path/to/old/tree) python ...
"""

from __future__ import annotations

import sys
import tempfile
import tomllib
from pathlib import Path


def shim_for(tree: Path, into: Path | None = None) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import pyscst...`` load ``tree``."""
    tree = tree.resolve()
    mapping = tomllib.loads((tree / "pyproject.toml").read_text())
    dirs = mapping.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    if not dirs:  # a tree from before the namespace: plain folders, PYTHONPATH works
        return tree
    root = Path(tempfile.mkdtemp(prefix="pyscst-shim-")) if into is None else into
    package = root / "pyscst"
    package.mkdir(parents=True)
    top = tree / dirs.get("pyscst", "pyscst")
    for entry in top.iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in dirs.items():
        head, _, sub = name.partition(".")
        if head == "pyscst" and sub and "." not in sub:
            (package / sub).symlink_to(tree / folder, target_is_directory=True)
    return root


def main() -> None:
    print(shim_for(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
