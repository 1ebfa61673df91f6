"""json_text: orjson's compact text, the standard library's for what orjson refuses."""

from __future__ import annotations

import json

from payout_gateway.json_text import json_text


def test_compact_text_that_reads_back_the_same() -> None:
    value = {"a": [1, 2.5, None, True], "ü": "✓ \u2028", "nested": {}}
    assert json_text(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(json_text(value)) == value


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    assert json_text({"amount": 2**70}) == '{"amount":1180591620717411303424}'
    assert json_text({1: "a"}) == '{"1":"a"}'
