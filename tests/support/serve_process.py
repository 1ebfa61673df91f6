"""Runs ``payout-gateway serve`` as a process of its own over live simulators and a seeded file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from payout_gateway.sandbox.commet import create_commet_sandbox
from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
from tests.support.gateway import PEPPER, SeededOrg, seed_organizations
from tests.support.live_server import free_port, live_server


@dataclass(frozen=True)
class ServedGateway:
    url: str
    keys: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    database: Path
    port: int
    commet_url: str
    paygentic_url: str


@contextmanager
def served_gateway(
    workdir: Path,
    orgs: tuple[SeededOrg, ...],
    *,
    workers: int = 1,
    paygentic: FastAPI | None = None,
    settings: Mapping[str, str] | None = None,
    database_url: str | None = None,
) -> Iterator[ServedGateway]:
    """``serve --workers N`` over both simulators (a fresh Commet one; ``paygentic``, else a
    fresh one) and a database seeded with ``orgs`` (``database_url``, else a SQLite file),
    until it answers /readyz; stopped on exit (if it is still running), its log then checked
    for tracebacks. ``settings``: more ``PAYOUT_GATEWAY_*`` variables, by their names after
    the prefix."""
    database = workdir / "gateway.db"
    database_url = database_url or f"sqlite+aiosqlite:///{database}"
    keys = seed_organizations(database_url, orgs)
    port = free_port()
    with ExitStack() as stack:
        commet_url = stack.enter_context(live_server(create_commet_sandbox()))
        paygentic_url = stack.enter_context(live_server(paygentic or create_paygentic_sandbox()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_GATEWAY_")}
        env |= {
            "PAYOUT_GATEWAY_DATABASE_URL": database_url,
            "PAYOUT_GATEWAY_COMMET__BASE_URL": f"{commet_url}/api/v1",
            "PAYOUT_GATEWAY_PAYGENTIC__BASE_URL": paygentic_url,
            "PAYOUT_GATEWAY_API_KEY_PEPPER": PEPPER.get_secret_value(),
            "PAYOUT_GATEWAY_REFRESH_INTERVAL_SECONDS": "0",
            "PAYOUT_GATEWAY_LOG_LEVEL": "INFO",
        }
        env |= {f"PAYOUT_GATEWAY_{name.upper()}": value for name, value in (settings or {}).items()}
        log = (workdir / "serve.log").open("wb")
        stack.callback(log.close)
        process = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "payout-gateway"), "serve"),
                *("--port", str(port), "--workers", str(workers)),
            ],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

        stack.callback(stop)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError((workdir / "serve.log").read_text()[-3000:])
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError((workdir / "serve.log").read_text()[-3000:])
            time.sleep(0.1)
        yield ServedGateway(
            url, keys, process, workdir / "serve.log", database, port, commet_url, paygentic_url
        )
        stop()
        output = (workdir / "serve.log").read_text()
        assert "Traceback" not in output, output[-3000:]


def log_records(served: ServedGateway) -> list[dict[str, Any]]:
    """The process's log records so far, one JSON object a line (uvicorn's and the
    libraries' included); the output of its command (its address, demo keys) left out."""
    output = served.log.read_text()
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]
