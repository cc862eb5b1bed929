"""Who is asking, and what they may do: Airflow's auth manager, as for Airflow's own pages.

The user comes from the same credentials Airflow's UI and REST API accept (the session
cookie the login page sets, or a bearer token), resolved by Airflow's own ``get_user``.
Audiences are DAGs, so permissions are the DAG's: reading an audience needs GET on its DAG,
triggering, approving or overriding needs POST on its runs (Airflow's Trigger permission),
and revealing unmasked identities needs PUT on the DAG (edit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

DAG_PREFIX = "cja_audience__"


class NotAuthenticated(Exception):
    """No valid session: pages redirect to Airflow's login, the rest answers 401."""


@dataclass
class Viewer:
    user: Any  # airflow BaseUser
    manager: Any  # airflow BaseAuthManager

    @property
    def name(self) -> str:
        return self.user.get_name()

    def _allowed(self, audience_id: str, method: str, entity: Any = None) -> bool:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        return self.manager.is_authorized_dag(
            method=method,
            access_entity=entity,
            details=DagDetails(id=DAG_PREFIX + audience_id),
            user=self.user,
        )

    def can_read(self, audience_id: str) -> bool:
        return self._allowed(audience_id, "GET")

    def can_trigger(self, audience_id: str) -> bool:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

        return self._allowed(audience_id, "POST", DagAccessEntity.RUN)

    def can_reveal(self, audience_id: str) -> bool:
        return self._allowed(audience_id, "PUT")

    def readable(self, audience_ids: list[str]) -> set[str]:
        """The ids whose DAG the user may read, asked in one call."""
        dag_ids = {DAG_PREFIX + a for a in audience_ids}
        allowed = self.manager.filter_authorized_dag_ids(dag_ids=dag_ids, user=self.user)
        return {d.removeprefix(DAG_PREFIX) for d in allowed}

    def require_read(self, audience_id: str) -> None:
        if not self.can_read(audience_id):
            raise HTTPException(403, f"you may not read the DAG {DAG_PREFIX}{audience_id}")

    def require_trigger(self, audience_id: str) -> None:
        if not self.can_trigger(audience_id):
            raise HTTPException(
                403, f"you may not trigger runs of the DAG {DAG_PREFIX}{audience_id}"
            )


async def viewer(request: Request) -> Viewer:
    """FastAPI dependency: the signed-in user, or :class:`NotAuthenticated`."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token)
        if scheme.lower() == "bearer" and token
        else None
    )
    try:
        user = await get_user(request, None, bearer)
    except HTTPException as exc:
        raise NotAuthenticated(exc.detail) from None
    return Viewer(user=user, manager=get_auth_manager())


def login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=str(request.url))


def same_origin(request: Request) -> bool:
    """Actions are form posts with the session cookie: refuse ones sent from other sites."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host
