"""The service's launch record endpoints, under /api/v1/launches (the rules are in launches.py).

- GET    /launches?everyone=false   your launches, newest first; everyone=true: all users' (administrators)
- POST   /launches                  record a launch (body: LaunchIn) → 201 and the record
- DELETE /launches/{launch_id}      the record, removed (yours, or anyone's for an administrator)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends

from rain.repository.models import Launch, LaunchId, LaunchIn
from rain.repository.store import Store


def launch_router(store: Callable[..., Awaitable[Store]]) -> APIRouter:
    """The launch endpoints, each acting through the Store the `store` dependency gives."""
    router = APIRouter(prefix="/launches", tags=["launches"])
    acting: Any = Depends(store)

    @router.get("", response_model=list[Launch])
    def list_launches(everyone: bool = False, s: Store = acting) -> list[Launch]:
        """Your launches, newest first; with everyone=true all users' (administrators only)."""
        return s.launches(everyone)

    @router.post("", response_model=Launch, status_code=201)
    def add_launch(body: LaunchIn, s: Store = acting) -> Launch:
        """Record a launch of an image you may read, as yours."""
        return s.add_launch(body)

    @router.delete("/{launch_id}", response_model=Launch)
    def remove_launch(launch_id: LaunchId, s: Store = acting) -> Launch:
        """The launch's record, removed: yours, or anyone's for an administrator."""
        return s.remove_launch(launch_id)

    return router
