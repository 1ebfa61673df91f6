"""Provider credentials and webhook secrets sealed at rest with Fernet keys from the settings.

The gateway must use a provider's API key to call it, so the key cannot be kept as a hash the
way the gateway's own API keys are; whoever reads the database (a backup, a replica, a support
query) would read every organization's provider credentials. With keys configured
(``PAYOUT_GATEWAY_SECRETS_KEYS``, newest first), each secret is written as ``fernet:<token>``
(cryptography's Fernet: AES-128-CBC and HMAC-SHA256, the token timestamped) and read with
whichever configured key sealed it, so a new key is rolled out by putting it first and
``payout-gateway org reseal-secrets`` re-seals every row with it before the old key goes.

Rows written without a key read as written (a deployment that sets keys later keeps working,
and ``reseal-secrets`` seals them). Without keys, secrets are written as they are, as before.

A row sealed with a key that is not listed (``reseal-secrets`` run with a new key before the
gateway was restarted with it) cannot be opened: each read of it raises SecretsKeyError, which
the gateway's edges answer as retryable (README), and ``UnreadableSecrets`` tells the operator
once per outage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

logger = logging.getLogger("payout_gateway.store")

PREFIX = "fernet:"


class SecretsKeyError(RuntimeError):
    """A sealed secret that none of the configured keys opens (or no key is configured)."""


class UnreadableSecrets:
    """The organizations whose secrets the configured keys did not open, told once per outage.

    A missing key fails every read of every row it sealed: each request of those organizations,
    each of their webhooks and each refresh cycle. The first failure
    of an outage is logged at ERROR with what to do; the failures after it say nothing; the
    outage ends, told once, when every organization that failed has been read again."""

    def __init__(self) -> None:
        self._failing: set[str] = set()
        self._failed_reads = 0

    def failed(self, organization_id: str, error: SecretsKeyError) -> None:
        if not self._failing:
            # The error's message names no key (SecretCodec.open).
            logger.error(
                "organization %s: its stored secrets cannot be opened, as %s; put the key that "
                "sealed them back in PAYOUT_GATEWAY_SECRETS_KEYS (the key `org reseal-secrets` "
                "last ran with) and restart. Until then the requests of each organization so "
                "sealed are refused (SECRETS_UNREADABLE), its webhooks answered 503 and its "
                "objects not refreshed; logged once until they open again",
                organization_id,
                error,
            )
        self._failing.add(organization_id)
        self._failed_reads += 1

    def opened(self, organization_id: str) -> None:
        if organization_id not in self._failing:
            return
        self._failing.discard(organization_id)
        if not self._failing:
            logger.info(
                "the configured secrets keys open the stored secrets again",
                extra={"failed_reads": self._failed_reads},
            )
            self._failed_reads = 0


class SecretCodec:
    """Seals secrets for the database and opens them again; with no keys, passes them as is.
    ``unreadable``: whose secrets it could not open, for the store to report (one codec per
    store, so per process)."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self.unreadable = UnreadableSecrets()
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None
        except ValueError as error:  # Fernet's message names no key material
            raise SecretsKeyError(
                "a secrets key must be 32 url-safe base64-encoded bytes "
                "(Fernet.generate_key(), or `payout-gateway secrets-key`)"
            ) from error

    @property
    def seals(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        """What the database keeps of ``secret``."""
        if self._fernet is None:
            return secret
        return PREFIX + self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, stored: str) -> str:
        """The secret behind ``stored``."""
        if not stored.startswith(PREFIX):
            return stored  # written before keys were configured
        if self._fernet is None:
            raise SecretsKeyError(
                "a secret in the database is sealed and no secrets key is configured "
                "(PAYOUT_GATEWAY_SECRETS_KEYS)"
            )
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode("ascii")).decode()
        except (InvalidToken, UnicodeEncodeError):
            raise SecretsKeyError(
                "none of the configured secrets keys opens a secret in the database"
            ) from None

    def reseal(self, stored: str) -> str:
        """``stored`` sealed with the newest key (a secret kept as written gets sealed)."""
        return self.seal(self.open(stored))
