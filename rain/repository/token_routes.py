"""The service's API token endpoints, under /api/v1/users/{name}/tokens.

A user manages their own tokens and an administrator anyone's; the rules are
the Store's. Lists and revocations never carry a secret or its hash; a new
token's secret is in the creating response only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from rain.repository.fields import Pattern
from rain.repository.models import NewToken, TokenInfo, TokenRequest, TokensRevoked, UserName
from rain.repository.store import Store
from rain.repository.tokens import TOKEN_ID_RE

TokenId = Annotated[str, Pattern(TOKEN_ID_RE, "token id", "10 hex digits; see `fg-image users token list`")]


def token_router(store: Callable[..., Awaitable[Store]]) -> APIRouter:
    """The token endpoints, each acting through the Store the `store` dependency gives."""
    router = APIRouter(prefix="/users/{name}/tokens", tags=["tokens"])
    acting: Any = Depends(store)

    @router.get("", response_model=list[TokenInfo])
    def list_tokens(name: UserName, s: Store = acting) -> list[TokenInfo]:
        return s.list_tokens(name)

    @router.post("", response_model=NewToken, status_code=201)
    def create_token(name: UserName, body: TokenRequest | None = None, s: Store = acting) -> NewToken:
        """Without a body: an unnamed token that never expires (what `fg-image users token NAME` made)."""
        request = body or TokenRequest()
        return s.create_token(name, request.name, request.expires_in)

    @router.delete("/{token_id}", response_model=TokenInfo)
    def revoke_token(name: UserName, token_id: TokenId, s: Store = acting) -> TokenInfo:
        return s.revoke_token(name, token_id)

    @router.delete("", response_model=TokensRevoked)
    def revoke_tokens(name: UserName, s: Store = acting) -> TokensRevoked:
        return TokensRevoked(user=name, revoked=s.revoke_tokens(name))

    return router
