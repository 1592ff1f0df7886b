"""pyscst: a SCSI target middle level on Trio.

The installed packages live under this one name (pyscst.scsi, pyscst.devices,
pyscst.actors, pyscst.transports, pyscst.admin, pyscst.supervision) so that
installing pyscst adds no generic top-level module to an environment. In the
repository they stay top-level folders; pyproject.toml's package-dir maps them.
"""

__version__ = "0.1.0"
