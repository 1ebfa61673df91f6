"""schema.graphql at the repo root is exactly what the code exports; the enums cannot drift."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from payout_gateway.cli import main
from payout_gateway.domain import enums
from payout_gateway.graphql.schema import build_schema

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
