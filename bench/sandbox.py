"""Serves one sandbox like `payout-gateway sandbox NAME`, with the two settings the bench needs.

- Commet: a 1 s idempotency window. The sandbox sweeps every stored idempotency key on each
  request (``SandboxState.idempotency_claim``), so under the default 24 h window its cost per
  request grows all through a run and drags both sides of a ratio; with 1 s it stays flat (at
  most rate x 1 s keys are kept).
- Paygentic: ``page_max`` raised to the gateway's page size in the bench (500), so the list
  baseline can return the same N accounts as ``bankAccounts(first: N)``.
- ``--latency-ms``: every API request waits that long before it is handled, as a provider
  across a network does (bench/load_row.py); the sandbox's control routes do not wait.
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from payout_gateway.sandbox.commet import CommetSandboxConfig, create_commet_sandbox
from payout_gateway.sandbox.paygentic import PaygenticSandboxConfig, create_paygentic_sandbox

COMMET_IDEMPOTENCY_TTL_SECONDS = 1


def build(provider: str, page_max: int) -> FastAPI:
    if provider == "commet":
        config = CommetSandboxConfig(idempotency_ttl_seconds=COMMET_IDEMPOTENCY_TTL_SECONDS)
        return create_commet_sandbox(config)
    return create_paygentic_sandbox(PaygenticSandboxConfig(page_max=page_max))


def with_latency(app: ASGIApp, seconds: float) -> ASGIApp:
    async def delayed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_sandbox"):
            await asyncio.sleep(seconds)
        await app(scope, receive, send)

    return delayed


def main() -> None:
    parser = argparse.ArgumentParser(description="One sandbox, configured for the bench.")
    parser.add_argument("provider", choices=["commet", "paygentic"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--page-max", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args()
    app: ASGIApp = build(args.provider, args.page_max)
    if args.latency_ms:
        app = with_latency(app, args.latency_ms / 1000)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
