"""The README's table of mutation errors names every `code` and `retryable` a client can be sent.

The schema calls UserError.code "stable" and tells programs to branch on it, but the README's
table listed the types only: a client could learn the codes (VALIDATION_FAILED,
IDEMPOTENCY_KEY_REUSED, PROVIDER_TIMEOUT, …) only by meeting them. Each row now lists its codes
and whether the type is retryable, and this test holds the table to the one map from the domain
error tree (graphql/errors.py ``to_graphql_error``)."""

from __future__ import annotations

import re
from pathlib import Path

from payout_gateway.domain import errors as domain
from payout_gateway.domain.enums import Provider
from payout_gateway.graphql.errors import to_graphql_error

README = Path(__file__).resolve().parents[2] / "README.md"
PROVIDER = Provider.COMMET

# One instance of every error the gateway raises on purpose and a mutation can answer.
RAISED: list[domain.PayoutGatewayError] = [
    domain.InputValidationError.single(("bank", "routing_number"), "is invalid"),
    domain.NotFoundError("none"),
    domain.NotPermittedError("no"),
    domain.PayoutAccountRequiredError(),
    domain.UnsupportedOperationError(PROVIDER, "x"),
    domain.StoreUnavailableError(),
    domain.IdempotencyConflictError("reused"),
    domain.IdempotencyInProgressError("running"),
    domain.ProviderRejectedError("no", provider=PROVIDER),
    domain.ProviderAuthenticationError("bad key", provider=PROVIDER),
    domain.OperationRetiredError("dashboard", provider=PROVIDER),
    domain.ProviderUnavailableError("down", provider=PROVIDER, outcome_unknown=True),
    domain.ProviderTimeoutError("slow", provider=PROVIDER, outcome_unknown=True),
    domain.ProviderRateLimitedError("later", provider=PROVIDER, retry_after=1),
    domain.ProviderCircuitOpenError("resting", provider=PROVIDER, retry_after=1),
    domain.ProviderBadResponseError("html", provider=PROVIDER),
]
# Never a mutation's answer: a webhook's refusal, a request's refused before anything runs
# (its credential's organization's secrets do not open: the HTTP refusal table), and the bases
# no code raises.
NOT_ANSWERED = {
    domain.WebhookRejectedError,
    domain.SecretsUnreadableError,
    domain.PayoutGatewayError,
    domain.IdempotencyError,
    domain.ProviderError,
}


def subclasses(cls: type[domain.PayoutGatewayError]) -> set[type[domain.PayoutGatewayError]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= subclasses(sub)
    return found


def answered() -> dict[str, tuple[set[str], bool]]:
    """Union member -> (the codes it carries, retryable), as the gateway answers them."""
    table: dict[str, tuple[set[str], bool]] = {}
    for error in RAISED:
        member = to_graphql_error(error)
        codes, retryable = table.setdefault(type(member).__name__, (set(), member.retryable))
        assert member.retryable == retryable, member
        codes.add(member.code)
    return table


def documented() -> dict[str, tuple[set[str], bool]]:
    """The README's table of mutation errors: type -> (codes, retryable)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| error type |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    assert header[:3] == ["error type", "`code`", "`retryable`"], header
    table: dict[str, tuple[set[str], bool]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        type_cell, code_cell, retryable_cell, *_ = (c.strip() for c in line.strip("|").split("|"))
        (name,) = re.findall(r"`(\w+)`", type_cell)
        assert retryable_cell in ("yes", "no"), line
        table[name] = (set(re.findall(r"`([A-Z_]+)`", code_cell)), retryable_cell == "yes")
    return table


def test_every_error_a_mutation_answers_is_in_the_table_of_raised_errors() -> None:
    raised = {type(error) for error in RAISED}
    assert subclasses(domain.PayoutGatewayError) - NOT_ANSWERED == raised


def test_the_readme_lists_every_code_and_retryable_flag_a_mutation_answers() -> None:
    assert documented() == answered()
