"""FastAPI's native OpenTelemetry stays off even when the process configures a tracer provider:
its records would carry exception messages unredacted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Run apart: the OpenTelemetry API accepts one global provider per process.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from opentelemetry import trace

    spans = []

    class RecordingTracer(trace.NoOpTracer):
        def start_span(self, name, *args, **kwargs):
            spans.append(name)
            return super().start_span(name, *args, **kwargs)

        def start_as_current_span(self, name, *args, **kwargs):
            spans.append(name)
            return super().start_as_current_span(name, *args, **kwargs)

    class RecordingProvider(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs):
            return RecordingTracer()

    trace.set_tracer_provider(RecordingProvider())

    from fastapi import FastAPI
    from payout_gateway.settings import Settings
    from payout_gateway.web import create_app

    async def traced(app):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                spans.clear()  # start-up talks to the in-process simulators (their own apps)
                assert (await client.get("/healthz")).status_code == 200
                answer = await client.post("/graphql", json={"query": "{ __typename }"})
                assert answer.status_code == 200, answer.text
        return len(spans)

    gateway = create_app(Settings(database_url=f"sqlite:///{sys.argv[1]}/gateway.db"))
    bare = FastAPI()
    bare.get("/healthz")(lambda: {"status": "ok"})
    bare.post("/graphql")(lambda: {"data": {}})
    print(asyncio.run(traced(gateway)), asyncio.run(traced(bare)))
    """
)


def test_the_gateway_does_not_trace_through_fastapi_even_with_a_provider_set(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    gateway_spans, bare_spans = (int(n) for n in done.stdout.split())
    assert gateway_spans == 0
    # The check can fail: a FastAPI app with the defaults does trace with this provider.
    assert bare_spans >= 2
