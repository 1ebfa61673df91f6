"""schema.graphql at the repo root is exactly what the code exports; the enums cannot drift."""

from __future__ import annotations

from pathlib import Path

import httpx
from click.testing import CliRunner
from graphql import (
    build_client_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    print_schema,
)
from graphql import build_schema as graphql_build_schema

from payout_gateway.cli import main
from payout_gateway.domain import enums
from payout_gateway.graphql.schema import build_schema
from payout_gateway.settings import Settings
from payout_gateway.web import create_app
from tests.support.live_server import live_server

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_matches_the_code() -> None:
    exported = build_schema().as_str() + "\n"
    committed = (ROOT / "schema.graphql").read_text(encoding="utf-8")
    assert committed == exported, (
        "schema.graphql drifted: run `payout-gateway export-schema --output schema.graphql`"
    )


def test_export_schema_command_writes_the_same_text(tmp_path: Path) -> None:
    target = tmp_path / "schema.graphql"
    result = CliRunner().invoke(main, ["export-schema", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == (ROOT / "schema.graphql").read_text(
        encoding="utf-8"
    )


def test_graphql_enums_are_the_domain_enums() -> None:
    schema = build_schema()
    for name, domain_enum in [
        ("BankAccountStatus", enums.BankAccountStatus),
        ("PayoutAccountStatus", enums.PayoutAccountStatus),
        ("ProviderName", enums.Provider),
        ("HolderType", enums.HolderType),
        ("AccountType", enums.AccountType),
        ("BusinessType", enums.BusinessType),
    ]:
        graphql_enum = schema._schema.type_map[name]
        assert set(graphql_enum.values) == {member.value for member in domain_enum}  # type: ignore[attr-defined]


def test_inputs_carry_no_organization_status_or_provider_ids() -> None:
    sdl = build_schema().as_str()
    inputs = [block for block in sdl.split("\n\n") if block.lstrip().startswith(("input ", '"""'))]
    for block in inputs:
        if "input " not in block:
            continue
        for forbidden in ("organizationId", "status", "providerAccountId", "provider:"):
            assert forbidden not in block, block


def test_the_served_schema_is_the_committed_one(tmp_path: Path) -> None:
    # The app builds its own schema (with its settings' limits): what a client introspects
    # over a socket must be schema.graphql too, not only what build_schema() gives by default.
    settings = Settings(database_url=f"sqlite:///{tmp_path}/schema.db", refresh_interval_seconds=0)
    query = get_introspection_query(
        descriptions=True, specified_by_url=True, input_value_deprecation=True
    )
    with live_server(create_app(settings)) as url:
        response = httpx.post(f"{url}/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    served = build_client_schema(response.json()["data"])
    committed = graphql_build_schema((ROOT / "schema.graphql").read_text(encoding="utf-8"))
    assert print_schema(lexicographic_sort_schema(served)) == print_schema(
        lexicographic_sort_schema(committed)
    ), "the served schema differs from schema.graphql"
