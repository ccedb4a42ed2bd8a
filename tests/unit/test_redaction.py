"""Secret-bearing URLs are shown without their secrets; text holding them is scrubbed."""

from __future__ import annotations

import httpx
import pytest

from tars_operators.redaction import redact_url, scrub

pytestmark = pytest.mark.unit

HOOK = "https://user:pa55word@hooks.example.com/services/T000/B000/XXXXSECRET?token=SECRET&x=1"


@pytest.mark.parametrize("url, keep_path, shown", [
    (HOOK, True, "https://user:***@hooks.example.com/services/T000/B000/XXXXSECRET?token=***&x=***"),
    (HOOK, False, "https://user:***@hooks.example.com/***"),
    ("http://127.0.0.1:8080/demo-1.0.0.tar.gz", True, "http://127.0.0.1:8080/demo-1.0.0.tar.gz"),
    ("http://[::1]:81/a?X-Amz-Signature=abcd", True, "http://[::1]:81/a?X-Amz-Signature=***"),
    ("https://h.example.com", False, "https://h.example.com"),
    ("http://[bad", True, "***"),
])
def test_redact_url(url: str, keep_path: bool, shown: str) -> None:
    assert redact_url(url, keep_path=keep_path) == shown


def test_an_httpx_error_about_the_url_is_scrubbed() -> None:
    response = httpx.Response(500, request=httpx.Request("POST", HOOK))
    with pytest.raises(httpx.HTTPStatusError) as err:
        response.raise_for_status()
    text = str(err.value)
    assert "token=SECRET" in text  # httpx puts the whole URL into its message
    assert "token=SECRET" not in scrub(text, HOOK) and "pa55word" not in scrub(text, HOOK)
    assert "SECRET" not in scrub(text, HOOK, keep_path=False)
