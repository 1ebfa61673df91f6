"""The processes under test: two sandboxes and the gateway, on loopback, always torn down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import httpx

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "payout-gateway")
HOST = "127.0.0.1"
PEPPER = "bench-pepper-not-a-secret"
SECRETS_KEY = "YmVuY2gtc2VjcmV0cy1rZXktbm90LWEtc2VjcmV0MDA="  # Fernet format, not a secret
COMMET_KEY = "ck_live_bench0commet0gateway"
PAYGENTIC_TOKEN = "pgx_bench_paygentic_token"
PAYGENTIC_ORG = "org_bench"
# The Paygentic organization's payout source and profile (both seeders use them).
PAYGENTIC_PAYOUT_SOURCE = "src_bench"
PAYGENTIC_BANK_NAME = "Bench Bank"
PAYGENTIC_HOLDER_TYPE = "company"
MAX_PAGE_SIZE = 500
ENVIRONMENT = "production"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One child process, in its own process group, its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log: IO[bytes]

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        self.log.close()


def start(name: str, args: list[str], port: int, workdir: Path, env: dict[str, str]) -> Service:
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
        start_new_session=True,
    )
    return Service(name, process, port, log_path, log)


def wait_ready(service: Service, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            tail = service.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{service.name} exited early:\n{tail}")
        try:
            if httpx.get(service.base + path, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} not ready on {service.base}{path} after {timeout}s")


@dataclass(frozen=True)
class Keys:
    commet: str
    paygentic: str


def _cli(args: list[str], env: dict[str, str], workdir: Path) -> str:
    done = subprocess.run(
        [CLI, *args], env=env, cwd=workdir, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"payout-gateway {args[:2]} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def seed(env: dict[str, str], workdir: Path) -> Keys:
    """Create both organizations and a gateway API key for each with the CLI."""
    commet = ["--name", "bench-commet", "--provider", "commet", "--provider-api-key", COMMET_KEY]
    paygentic = [
        *("--name", "bench-paygentic", "--provider", "paygentic"),
        *("--provider-api-key", PAYGENTIC_TOKEN, "--provider-org-id", PAYGENTIC_ORG),
        *("--payout-source-id", PAYGENTIC_PAYOUT_SOURCE, "--bank-name", PAYGENTIC_BANK_NAME),
        *("--holder-type", PAYGENTIC_HOLDER_TYPE),
    ]
    for options in (commet, paygentic):
        _cli(["org", "create", *options, "--country", "US", "--currency", "USD"], env, workdir)
    keys = []
    for name in ("bench-commet", "bench-paygentic"):
        shown = _cli(["org", "issue-key", name, "--label", "bench"], env, workdir)
        found = re.search(r"api key[^:]*:\s*(\S+)", shown)
        if found is None:
            raise RuntimeError(f"no API key in the output of org issue-key:\n{shown}")
        keys.append(found.group(1))
    return Keys(*keys)


def gateway_env(commet: Service, paygentic: Service, database_url: str) -> dict[str, str]:
    return {
        "PAYOUT_GATEWAY_ENVIRONMENT": ENVIRONMENT,
        "PAYOUT_GATEWAY_DATABASE_URL": database_url,
        "PAYOUT_GATEWAY_COMMET__BASE_URL": f"{commet.base}/api/v1",
        "PAYOUT_GATEWAY_PAYGENTIC__BASE_URL": paygentic.base,
        "PAYOUT_GATEWAY_API_KEY_PEPPER": PEPPER,
        # As production runs: provider credentials sealed at rest.
        "PAYOUT_GATEWAY_SECRETS_KEYS": SECRETS_KEY,
        "PAYOUT_GATEWAY_MAX_PAGE_SIZE": str(MAX_PAGE_SIZE),
        # The background status refresh polls Paygentic on its own: off, so that every provider
        # call and statement counted belongs to a request.
        "PAYOUT_GATEWAY_REFRESH_INTERVAL_SECONDS": "0",
    }


@dataclass
class Stack:
    """The running processes; ``gateway`` is replaced by ``restart_gateway``."""

    commet: Service
    paygentic: Service
    gateway: Service
    keys: Keys
    database_url: str
    env: dict[str, str]
    workdir: Path
    workers: int = 1


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_GATEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start_gateway(workdir: Path, env: dict[str, str], workers: int) -> Service:
    """``payout-gateway serve`` on a free port, with ``--workers N`` past 1 (its log:
    gateway.log for 1 worker, gateway-wN.log otherwise); returns once it answers /healthz and,
    with several workers, once the supervisor has spawned all of them."""
    port = free_port()
    args = [CLI, "serve", "--host", HOST, "--port", str(port)]
    name = "gateway"
    if workers > 1:
        args += ["--workers", str(workers)]
        name = f"gateway-w{workers}"
    gateway = start(name, args, port, workdir, {**_clean_env(), **env})
    try:
        wait_ready(gateway, "/healthz")
        if workers > 1:
            _wait_workers(gateway, workers)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def _wait_workers(service: Service, workers: int, timeout: float = 30.0) -> None:
    """Until every worker listens on its own socket (web/listeners.py): wrk opens all its
    connections at once, and those opened before a worker listens all go to the others. A
    gateway whose workers share the supervisor's socket (uvicorn's own way, or a tree from
    before web/listeners.py) is ready once its workers exist."""
    import psutil  # type: ignore[import-untyped]  # installed by scripts/bench

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor = psutil.Process(service.pid)
        if any(_listens(c, service.port) for c in supervisor.net_connections(kind="tcp")):
            if len(supervisor.children()) >= workers:  # the workers share its socket
                return
        elif sum(_listens(c, service.port) for c in psutil.net_connections(kind="tcp")) >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{service.name}: fewer than {workers} workers listening after {timeout}s")


def _listens(connection: Any, port: int) -> bool:
    return bool(connection.status == "LISTEN" and connection.laddr.port == port)


def restart_gateway(stack: Stack, workers: int) -> None:
    """Stop the gateway and start it again with ``workers`` worker processes, on the same
    database (organizations, keys and accounts kept) and the same sandboxes."""
    stack.gateway.stop()
    stack.gateway = start_gateway(stack.workdir, stack.env, workers)
    stack.workers = workers


def postmaster_pid(server_url: str) -> int:
    """The PostgreSQL server's main process: its children are the backends, so watching it
    counts the database's CPU (bench.load counts a watched process with its descendants)."""

    import psutil  # installed by scripts/bench

    async def ask() -> int:
        connection = await asyncpg.connect(_asyncpg_dsn(server_url))
        try:
            # Read while connected: the backend process exits with its connection.
            backend = psutil.Process(int(await connection.fetchval("SELECT pg_backend_pid()")))
            return int(backend.ppid())
        finally:
            await connection.close()

    return asyncio.run(ask())


def _asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+asyncpg)?://", "postgresql://", url)


@contextlib.contextmanager
def fresh_postgres_database(server_url: str, suffix: str = "") -> Iterator[str]:
    """A new, empty database on the server ``server_url`` names, dropped on exit: runs never
    see each other's rows (``suffix`` tells apart those one process holds at once). Yields its
    URL."""
    parts = urlsplit(_asyncpg_dsn(server_url))
    name = f"payout_gateway_bench_{os.getpid()}{suffix}"

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(server_url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def provider_sandbox(provider: str, workdir: Path) -> Iterator[str]:
    """One provider's sandbox (``commet`` or ``paygentic``) alone, in a process of its own;
    the base URL of its API. Stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "bench.sandbox", provider, "--port", str(port)]
    sandbox = start(provider, command, port, workdir, _clean_env())
    try:
        wait_ready(sandbox, "/_sandbox/requests")
        yield f"http://{HOST}:{port}" + ("/api/v1" if provider == "commet" else "")
    finally:
        sandbox.stop()


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    workers: int = 1,
    postgres_url: str | None = None,
    sandbox_options: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Start both sandboxes, seed the database, start the gateway; stop all of them on exit.
    The database is a SQLite file in ``workdir``, or with ``postgres_url`` a new database on
    that PostgreSQL server. ``sandbox_options``: more of bench/sandbox.py's options."""
    sandboxes: list[Service] = []
    stack: Stack | None = None
    base_env = _clean_env()
    stack_resources = contextlib.ExitStack()
    try:
        for name in ("commet", "paygentic"):
            port = free_port()
            args = [sys.executable, "-m", "bench.sandbox", name, "--port", str(port)]
            args += ["--page-max", str(MAX_PAGE_SIZE), *sandbox_options]
            sandboxes.append(start(name, args, port, workdir, base_env))
        commet, paygentic = sandboxes
        wait_ready(commet, "/_sandbox/requests")
        wait_ready(paygentic, "/_sandbox/requests")
        if postgres_url is None:
            database_url = f"sqlite:///{workdir / 'bench.db'}"
        else:
            database_url = stack_resources.enter_context(fresh_postgres_database(postgres_url))
        env = gateway_env(commet, paygentic, database_url)
        if postgres_url is not None:
            _cli(["migrate"], {**base_env, **env}, workdir)
        keys = seed({**base_env, **env}, workdir)
        gateway = start_gateway(workdir, env, workers)
        stack = Stack(commet, paygentic, gateway, keys, database_url, env, workdir, workers)
        yield stack
    finally:
        # The gateway first (whichever one is running after restarts), then the sandboxes.
        if stack is not None:
            stack.gateway.stop()
        for service in reversed(sandboxes):
            service.stop()
        stack_resources.close()  # the PostgreSQL database, once nothing uses it
