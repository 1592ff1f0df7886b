"""The login core's authenticators: ``AuthMethod=None`` or CHAP, per target.

Why separate from ``login.py``: the login machine only knows the
:class:`~transports.iscsi.login.Authenticator` protocol; which method a
target demands and with which credentials is configuration, chosen here once
the first request has named the initiator, the target and the session type.
"""

from __future__ import annotations

import logging

from pyscst.transports.iscsi.chap import ChapSettings, ChapTarget
from pyscst.transports.iscsi.login import AuthStep, LoginStatus, NoAuthentication

log = logging.getLogger(__name__)


class ChapAuthenticator:
    """``AuthMethod=CHAP`` only: one-way, or mutual when the initiator asks."""

    def __init__(self, settings: ChapSettings, initiator: str = "", where: str = "") -> None:
        self._chap = ChapTarget(settings)
        self._initiator = initiator
        self._where = where
        self.user: str | None = None

    def methods(self) -> tuple[str, ...]:
        return ("CHAP",)

    def start(self, method: str, initiator_name: str, target_name: str | None) -> AuthStep:
        return AuthStep()

    def step(self, pairs: list[tuple[str, str]]) -> AuthStep:
        step = self._chap.receive(pairs)
        if step.failure is not None:
            log.info(
                "CHAP refused %s on %s: %s", self._initiator[:255], self._where, step.failure
            )
            return AuthStep(failure=LoginStatus.AUTHENTICATION_FAILURE)
        if step.complete:
            self.user = step.user
        return AuthStep(step.pairs, complete=step.complete)


def authenticator_for(
    settings: ChapSettings | None, initiator: str, where: str
) -> ChapAuthenticator | NoAuthentication:
    """CHAP when ``settings`` names any user, else no authentication."""
    if settings is None or not settings.users:
        return NoAuthentication()
    return ChapAuthenticator(settings, initiator, where)


class AuthRegistry:
    """CHAP settings per target name and for discovery, as the daemon last set them.

    Owned by the daemon, read by every portal at each login: a change (admin
    edit, reload) applies to logins from then on; sessions already logged in
    are not disturbed.
    """

    def __init__(self) -> None:
        self._targets: dict[str, ChapSettings] = {}
        self.discovery: ChapSettings | None = None

    def replace(self, targets: dict[str, ChapSettings], discovery: ChapSettings | None) -> None:
        self._targets = {name.lower(): s for name, s in targets.items()}
        self.discovery = discovery

    def settings(self, session_type: str, target_name: str | None) -> ChapSettings | None:
        if session_type == "Discovery":
            return self.discovery
        return self._targets.get((target_name or "").lower())

    def authenticator(
        self, initiator: str, target_name: str | None, session_type: str
    ) -> ChapAuthenticator | NoAuthentication:
        where = "discovery" if session_type == "Discovery" else f"target {target_name}"
        return authenticator_for(self.settings(session_type, target_name), initiator, where)
