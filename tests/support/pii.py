"""What a response, log line or stored byte may never contain: a full account number."""

from __future__ import annotations

import re

# Account and routing numbers in the tests are runs of 9+ digits standing alone; last4 is not.
FULL_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{9,}(?![0-9A-Za-z])")


def assert_no_full_numbers(text: str) -> None:
    found = FULL_NUMBER.search(text)
    assert found is None, (
        f"a full number leaked: …{text[max(0, found.start() - 40) : found.end() + 40]}…"
    )
