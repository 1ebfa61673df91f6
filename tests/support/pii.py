"""What a response, log line or stored byte may never contain: a full account number."""

from __future__ import annotations

import re

# Account and routing numbers in the tests are runs of 9+ digits standing alone; last4 is not.
# An underscore joins an identifier: the Commet sandbox's request ids are req_<24 hex>, and one
# in ~79,000 is all digits (a CI run once failed on "req_629445007061393483815346").
FULL_NUMBER = re.compile(r"(?<![0-9A-Za-z_])[0-9]{9,}(?![0-9A-Za-z_])")


def assert_no_full_numbers(text: str) -> None:
    found = FULL_NUMBER.search(text)
    assert found is None, (
        f"a full number leaked: …{text[max(0, found.start() - 40) : found.end() + 40]}…"
    )
