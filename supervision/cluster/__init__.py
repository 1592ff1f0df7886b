"""Cluster mode: several daemons export the same devices, coordinated through etcd.

Only the daemon (``supervision/daemon.py``) composes this package; it implements
the protocols the middle level defines (``actors/shared_state.py``), so no actor
imports it. ``etcd_proto`` is the sans-I/O etcd v3 JSON protocol, ``etcd_client``
the Trio/httpx shell, ``resv_codec`` the reservation record, ``resv_store`` the shared
reservations, ``alua_sync`` the port group states, ``node`` the member (lease, fence,
watch, acknowledgements) that ties them together.
"""
