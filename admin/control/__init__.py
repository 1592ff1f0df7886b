"""The control server inside the daemon: the JSON-lines protocol, the socket
endpoint and the operations it serves on the running daemon.

Never imports :mod:`pyscst.admin.client`; the client imports only
:mod:`pyscst.admin.control.protocol` from here.
"""
