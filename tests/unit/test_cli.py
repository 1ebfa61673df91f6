"""The ``payout-gateway org …`` commands: create, issue a key shown once, list, revoke; and
the app ``serve`` runs."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner, Result
from pydantic import SecretStr

from payout_gateway import cli
from payout_gateway.cli import main
from payout_gateway.store import Store
from payout_gateway.tenancy import Tenancy
from tests.support.live_server import free_port


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("PAYOUT_GATEWAY_DATABASE_URL", url)
    monkeypatch.setenv("PAYOUT_GATEWAY_API_KEY_PEPPER", "cli-pepper")
    return url


def authenticate(url: str, key: str) -> str | None:
    async def check() -> str | None:
        store = Store.from_url(url)
        try:
            org = await Tenancy(store, SecretStr("cli-pepper")).authenticate(key)
            return org.name if org else None
        finally:
            await store.dispose()

    return asyncio.run(check())


def test_org_lifecycle_from_the_command_line(env: str) -> None:
    runner = CliRunner()
    created = runner.invoke(
        main,
        [
            "org",
            "create",
            "--name",
            "acme",
            "--provider",
            "paygentic",
            "--provider-org-id",
            "org_acme",
            "--country",
            "us",
            "--currency",
            "usd",
            "--bank-name",
            "Acme Bank",
        ],
        input="pgx_secret_token\n",
    )
    assert created.exit_code == 0, created.output
    assert "pgx_secret_token" not in created.output
    listed = runner.invoke(main, ["org", "list"])
    assert "acme" in listed.output
    assert "PAYGENTIC" in listed.output
    assert "US USD" in listed.output

    issued = runner.invoke(main, ["org", "issue-key", "acme", "--label", "backend"])
    assert issued.exit_code == 0, issued.output
    key = issued.output.split("store it now): ")[1].strip()
    key_id = issued.output.split("key id: ")[1].split()[0]
    assert authenticate(env, key) == "acme"

    keys = runner.invoke(main, ["org", "keys", "acme"])
    assert key not in keys.output
    assert key[:12] in keys.output
    assert "active" in keys.output

    revoked = runner.invoke(main, ["org", "revoke-key", key_id])
    assert revoked.exit_code == 0, revoked.output
    assert authenticate(env, key) is None
    again = runner.invoke(main, ["org", "revoke-key", key_id])
    assert again.exit_code == 2


def test_bad_profile_is_a_clear_error(env: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "org",
            "create",
            "--name",
            "x",
            "--provider",
            "commet",
            "--country",
            "XX",
            "--currency",
            "usd",
            "--provider-api-key",
            "ck_live_abcdefgh",
        ],
    )
    assert result.exit_code == 2
    assert "country" in result.output


def create_paygentic_org(*extra: str) -> Result:
    """``org create`` of a Paygentic organization ``x`` with ``extra`` options."""
    return CliRunner().invoke(
        main,
        [
            "org",
            "create",
            "--name",
            "x",
            "--provider",
            "paygentic",
            "--country",
            "US",
            "--currency",
            "USD",
            "--provider-api-key",
            "pgx_tokentoken",
            *extra,
        ],
    )


def test_paygentic_needs_its_organization_id(env: str) -> None:
    result = create_paygentic_org()
    assert result.exit_code != 0
    assert "--provider-org-id" in result.output


@pytest.mark.parametrize("provider_org_id", ["acme", "org_", "org_acme-inc", "ORG_acme"])
def test_a_paygentic_organization_id_paygentic_refuses_is_refused_here(
    env: str, provider_org_id: str
) -> None:
    # paygentic.md "Transport": organizationId matches ^org_[a-zA-Z0-9]+$; Paygentic would refuse
    # every request naming another.
    result = create_paygentic_org("--provider-org-id", provider_org_id)
    assert result.exit_code == 2, result.output
    assert "org_ followed by letters and digits" in result.output
    assert "x" not in CliRunner().invoke(main, ["org", "list"]).output.split()


def test_serve_builds_an_app_that_owns_its_process(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the process `serve` runs tunes its cycle collector (web/gc_tuning.py); one app
    # with one worker, and the factory each worker of `--workers N` imports by name.
    import payout_gateway.web

    built: list[dict[str, Any]] = []
    served: list[tuple[Any, dict[str, Any]]] = []

    def create_app(settings: Any = None, **options: Any) -> str:
        built.append(options)
        return "app"

    monkeypatch.setattr(payout_gateway.web, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append((app, kwargs)))
    # The serving process's log records skip the caller lookups (cli.lean_log_records);
    # restored for the rest of the test session.
    for flag in ("_srcfile", "logThreads", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, getattr(logging, flag))
    assert CliRunner().invoke(main, ["serve"]).exit_code == 0
    assert (served[0][0], built) == ("app", [{"serving": True}])
    assert (logging._srcfile, logging.logThreads, logging.logMultiprocessing) == (
        None,
        False,
        False,
    )
    logging.logThreads = True  # the factory of each --workers process sets them again

    supervised: list[tuple[uvicorn.Config, list[socket.socket]]] = []

    class Supervisor:
        def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
            supervised.append((config, sockets))

        def run(self) -> None:
            pass

    monkeypatch.setattr(cli, "Multiprocess", Supervisor)
    monkeypatch.setenv("PAYOUT_GATEWAY_COMMET__BASE_URL", "http://127.0.0.1:9/api/v1")
    monkeypatch.setenv("PAYOUT_GATEWAY_PAYGENTIC__BASE_URL", "http://127.0.0.1:9")
    result = CliRunner().invoke(main, ["serve", "--workers", "2", "--port", "0"])
    assert result.exit_code == 0, result.output
    config, sockets = supervised[0]
    for sock in sockets:
        sock.close()
    assert (config.factory, config.workers, config.access_log) == (True, 2, False)
    assert isinstance(config.app, str)
    module, _, name = config.app.partition(":")
    assert getattr(importlib.import_module(module), name)() == "app"
    assert built[1:] == [{"serving": True}]
    assert not logging.logThreads


def test_serve_with_workers_on_a_port_in_use_says_so(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr(cli, "Multiprocess", lambda *a, **k: started.append(a))
    monkeypatch.setenv("PAYOUT_GATEWAY_COMMET__BASE_URL", "http://127.0.0.1:9/api/v1")
    monkeypatch.setenv("PAYOUT_GATEWAY_PAYGENTIC__BASE_URL", "http://127.0.0.1:9")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(main, ["serve", "--workers", "2", "--port", port])
    assert result.exit_code == 1, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert started == []


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["org", "list"]])
def test_invalid_settings_name_each_variable_and_never_echo_a_value(
    env: str, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("PAYOUT_GATEWAY_JWT__SECRET", "canary-signing-secret")
    monkeypatch.setenv("PAYOUT_GATEWAY_MAX_PAGE_SIZE", "0")
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert "invalid settings:" in result.output
    assert (
        "PAYOUT_GATEWAY_MAX_PAGE_SIZE: Input should be greater than or equal to 1" in result.output
    )
    assert "PAYOUT_GATEWAY_JWT: Value error, JWT__AUDIENCE is required" in result.output
    assert "canary-signing-secret" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_URL", "postgresql://gw:canary-pw@db:five/gw", "must be a sqlite:/// or"),
        ("DATABASE_URL", "mysql://gw:canary-pw@db/gw", "must be a sqlite:/// or"),
        ("DATABASE_URL", "", "must be a sqlite:/// or postgresql:// URL"),
        ("REDIS_URL", "redis-canary:6379", "must be a redis://, rediss:// or unix:// URL"),
        ("COMMET__BASE_URL", "commet.canary/api/v1", "must be an http:// or https:// URL"),
        ("JWT__JWKS_URL", "ftp://canary/jwks.json", "must be an http:// or https:// URL"),
        ("PAYGENTIC__READ_TIMEOUT", "-1", "Input should be greater than 0"),
        ("LOG_LEVEL", "verbose", "must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG"),
        ("SECRETS_KEYS", "canary-not-a-fernet-key", "a secrets key must be 32 url-safe"),
        ("DEFAULT_PAGE_SIZE", "101", "must be at most PAYOUT_GATEWAY_MAX_PAGE_SIZE"),
    ],
)
def test_a_value_that_would_fail_later_is_an_invalid_setting_at_start(
    env: str, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    # Each of these started the gateway (or a command) and failed at its first use, with a
    # traceback, or never failed and broke every call.
    monkeypatch.setenv("PAYOUT_GATEWAY_JWT__ISSUER", "https://id.example")
    monkeypatch.setenv("PAYOUT_GATEWAY_JWT__AUDIENCE", "payout-gateway")
    monkeypatch.setenv(f"PAYOUT_GATEWAY_{variable}", value)
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 1
    assert f"invalid settings:\n  PAYOUT_GATEWAY_{variable}: " in result.output
    assert message in result.output
    assert "canary" not in result.output
    assert "Traceback" not in result.output


def test_a_list_that_is_not_json_is_an_invalid_setting_naming_its_variable(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYOUT_GATEWAY_CORS_ORIGINS", "https://app.example")
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 1
    assert "invalid settings:\n  PAYOUT_GATEWAY_CORS_ORIGINS: not valid JSON" in result.output
    assert "Traceback" not in result.output


def apps_served(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The apps ``serve`` hands to uvicorn from now on, which does not start."""
    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    return served


def serving_nothing(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``apps_served``, run to the end of ``serve``: what serving the app would set for the
    process (signal handlers, lean log records) stays this test's."""
    served = apps_served(monkeypatch)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    monkeypatch.setattr(cli, "lean_log_records", lambda: None)
    return served


@pytest.mark.parametrize(
    "command", [["serve"], ["migrate"], ["migrate", "--show"], ["org", "list"]]
)
def test_a_database_that_cannot_be_reached_is_one_line_naming_the_variable(
    env: str, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    served = apps_served(monkeypatch)
    port = free_port()
    monkeypatch.setenv(
        "PAYOUT_GATEWAY_DATABASE_URL", f"postgresql://gateway:canary-pw@127.0.0.1:{port}/gateway"
    )
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        "Error: cannot use the database of PAYOUT_GATEWAY_DATABASE_URL: "
    ), result.output
    assert "Connect call failed" in result.output
    assert "canary-pw" not in result.output
    assert served == []


def test_serve_names_its_database_without_the_password(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def migrated(url: str, revision: str = "head") -> None:
        pass

    monkeypatch.setattr(cli, "_upgrade", migrated)
    serving_nothing(monkeypatch)
    monkeypatch.setenv("PAYOUT_GATEWAY_DATABASE_URL", "postgresql://gateway:canary-pw@db/gateway")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 0, result.output
    assert "(database: postgresql://gateway:***@db/gateway)" in result.output
    assert "canary-pw" not in result.output


def test_serve_prints_only_the_demo_organizations_that_exist(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With Commet configured, only Paygentic is simulated: demo-commet is not created, so
    # printing its key told the user to use a key that answers UNAUTHENTICATED.
    serving_nothing(monkeypatch)
    monkeypatch.setenv("PAYOUT_GATEWAY_COMMET__BASE_URL", "http://127.0.0.1:9/api/v1")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 0, result.output
    assert "key: pgw_demo_paygentic" in result.output
    assert "pgw_demo_commet" not in result.output
    assert "/sandbox/commet" not in result.output


@pytest.mark.parametrize(
    ("provider", "credentials", "base_url"),
    [
        (
            "commet",
            "x-api-key ck_live_",
            "PAYOUT_GATEWAY_COMMET__BASE_URL=http://127.0.0.1:8101/api/v1",
        ),
        ("paygentic", "Bearer <8+", "PAYOUT_GATEWAY_PAYGENTIC__BASE_URL=http://127.0.0.1:8101\n"),
    ],
)
def test_a_standalone_simulator_says_which_credentials_it_takes_and_how_to_use_it(
    monkeypatch: pytest.MonkeyPatch, provider: str, credentials: str, base_url: str
) -> None:
    # A gateway organization made with a guessed Commet key got only "Invalid API key.".
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    result = CliRunner().invoke(main, ["sandbox", provider, "--port", "8101"])
    assert result.exit_code == 0, result.output
    assert credentials in result.output
    assert base_url in result.output


def logged_records(program: str) -> list[dict[str, Any]]:
    """The JSON log records a Python program wrote to stderr, run in a process of its own:
    the logging set-up is process-wide."""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]


def test_served_log_lines_carry_the_request_id_of_the_request_they_belong_to() -> None:
    program = (
        "import logging, logging.config\n"
        "from payout_gateway.cli import logging_config\n"
        "from payout_gateway.request_log import reset_request_id, set_request_id\n"
        "logging.config.dictConfig(logging_config('INFO'))\n"
        "serving = set_request_id('req-42')\n"
        "logging.getLogger('payout_gateway.webhooks').info('inside')\n"
        "reset_request_id(serving)\n"
        "logging.getLogger('payout_gateway.webhooks').info('outside')\n"
    )
    records = logged_records(program)
    assert [(r["message"], r.get("request_id")) for r in records] == [
        ("inside", "req-42"),
        ("outside", None),
    ]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("INFO", [("uvicorn.error", "INFO"), ("asyncio", "WARNING")]),
        ("WARNING", [("asyncio", "WARNING")]),
    ],
)
def test_uvicorn_s_records_follow_the_log_level_and_the_libraries_only_warn(
    level: str, expected: list[tuple[str, str]]
) -> None:
    # As the README's PAYOUT_GATEWAY_LOG_LEVEL row says: uvicorn's own start-up lines (INFO)
    # are kept at INFO, the libraries' INFO is never written. uvicorn sets its loggers' levels
    # when its Config is built from serve's options, so the test builds one. asyncio stands
    # for the libraries: SQLAlchemy's loggers set their own WARNING level on import.
    program = (
        "import logging, uvicorn\n"
        "from payout_gateway.cli import uvicorn_options\n"
        "from payout_gateway.settings import Settings\n"
        f"options = uvicorn_options(Settings(log_level={level!r}), '127.0.0.1', 8000)\n"
        "uvicorn.Config('payout_gateway.cli:served_app', **options)\n"
        "logging.getLogger('uvicorn.error').info('uvicorn info')\n"
        "logging.getLogger('asyncio').info('library info')\n"
        "logging.getLogger('asyncio').warning('library warning')\n"
    )
    records = logged_records(program)
    assert [(r["name"], r["levelname"]) for r in records] == expected, records


def test_a_database_that_keeps_its_lock_is_named_as_the_cause(env: str) -> None:
    # Migrated first, then another connection holds the file's write lock for the whole
    # command: its write waits the store's busy timeout, then fails.
    assert CliRunner().invoke(main, ["migrate"]).exit_code == 0
    holder = sqlite3.connect(env.removeprefix("sqlite:///"))
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = CliRunner().invoke(
            main,
            [
                "org",
                "create",
                "--name",
                "locked-out",
                "--provider",
                "commet",
                "--country",
                "US",
                "--currency",
                "usd",
                "--provider-api-key",
                "ck_live_abcdefgh",
            ],
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        "error: The gateway's database is unavailable. Nothing was changed; retry. "
        "(OperationalError: database is locked"
    ), result.output


@pytest.mark.parametrize("pepper", [None, "", "payout-gateway-development-pepper"])
def test_production_refuses_the_public_development_pepper(
    env: str, monkeypatch: pytest.MonkeyPatch, pepper: str | None
) -> None:
    # It keys the API key hashes and the fingerprints of requests holding account numbers.
    monkeypatch.setenv("PAYOUT_GATEWAY_ENVIRONMENT", "production")
    reach_the_providers(monkeypatch)
    if pepper is None:
        monkeypatch.delenv("PAYOUT_GATEWAY_API_KEY_PEPPER", raising=False)
    else:
        monkeypatch.setenv("PAYOUT_GATEWAY_API_KEY_PEPPER", pepper)
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 1
    assert "invalid settings:\n  PAYOUT_GATEWAY_API_KEY_PEPPER: " in result.output
    assert "the development pepper is public" in result.output
    monkeypatch.setenv("PAYOUT_GATEWAY_API_KEY_PEPPER", "a-pepper-of-our-own")
    assert CliRunner().invoke(main, ["migrate"]).exit_code == 0


def reach_the_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """What production needs besides a pepper: each provider's own URL."""
    monkeypatch.setenv("PAYOUT_GATEWAY_COMMET__BASE_URL", "https://commet.invalid/api/v1")
    monkeypatch.setenv("PAYOUT_GATEWAY_PAYGENTIC__BASE_URL", "https://paygentic.invalid")


@pytest.mark.parametrize("configured", [(), ("COMMET",), ("PAYGENTIC",)])
def test_production_refuses_to_stand_a_simulator_in_for_a_provider(
    env: str, monkeypatch: pytest.MonkeyPatch, configured: tuple[str, ...]
) -> None:
    # A simulator in-process brings its control routes, which anyone may call unauthenticated
    # to verify accounts or mark payouts paid.
    served = apps_served(monkeypatch)
    monkeypatch.setenv("PAYOUT_GATEWAY_ENVIRONMENT", "production")
    for provider in ("COMMET", "PAYGENTIC"):
        variable = f"PAYOUT_GATEWAY_{provider}__BASE_URL"
        if provider in configured:
            monkeypatch.setenv(variable, f"https://{provider.lower()}.invalid")
        else:
            monkeypatch.delenv(variable, raising=False)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1, result.output
    for provider in ("COMMET", "PAYGENTIC"):
        line = (
            f"  PAYOUT_GATEWAY_{provider}: Value error, production needs "
            f"PAYOUT_GATEWAY_{provider}__BASE_URL: without it the provider's in-process "
            "simulator would stand in, with its unauthenticated control routes\n"
        )
        assert (line in result.output) is (provider not in configured), result.output
    assert served == []
    reach_the_providers(monkeypatch)
    assert CliRunner().invoke(main, ["migrate"]).exit_code == 0


def test_serve_with_a_redis_that_cannot_be_reached_is_one_line_naming_the_variable(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = apps_served(monkeypatch)
    monkeypatch.setenv("PAYOUT_GATEWAY_REDIS_URL", f"redis://:canary-pw@127.0.0.1:{free_port()}/0")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        "Error: cannot reach the Redis of PAYOUT_GATEWAY_REDIS_URL: "
    ), result.output
    assert "canary-pw" not in result.output
    assert "Traceback" not in result.output
    assert served == []
