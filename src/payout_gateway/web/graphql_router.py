"""The GraphQL HTTP endpoint: Strawberry's FastAPI router with a body parser that cannot 500."""

from __future__ import annotations

import json

from cross_web import HTTPException
from strawberry.fastapi import GraphQLRouter

from payout_gateway.graphql.context import GatewayContext


class GatewayGraphQLRouter(GraphQLRouter[GatewayContext, None]):
    def decode_json(self, data: str | bytes) -> object:
        # Strawberry maps only JSONDecodeError to 400; 5,000 "[" overflow the decoder's
        # recursion instead, which would otherwise surface as a 500.
        try:
            return json.loads(data)
        except RecursionError:
            raise HTTPException(400, "Unable to parse request body as JSON") from None
