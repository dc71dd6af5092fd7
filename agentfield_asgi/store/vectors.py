"""Vector memory per backend. (Interim: vectors are not implemented yet; see issue 9.)"""

from __future__ import annotations

from typing import Any

from ..errors import AgentFieldError


class VectorsUnavailable(AgentFieldError):
    status = 501
    code = "not_implemented"


async def attach_sqlite_vectors(store: Any) -> None:
    store._vectors = None
