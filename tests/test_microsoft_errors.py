"""proxy.microsoft.errors: what an AADSTS error means, from the token endpoint's answer or
from the redirect back to the app; the table in MICROSOFT.md."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import ConsentProxyError
from proxy.microsoft import (
    ErrorClass,
    ErrorKind,
    MicrosoftError,
    aadsts_number,
    classify,
    from_response,
)

# --- classify: the table in MICROSOFT.md ---------------------------------------------------

TABLE = [
    (65004, "access_denied", ErrorKind.DECLINED),
    (90094, "access_denied", ErrorKind.ADMIN_APPROVAL_REQUIRED),
    (90095, "access_denied", ErrorKind.ADMIN_APPROVAL_REQUIRED),
    (900941, "access_denied", ErrorKind.ADMIN_APPROVAL_REQUIRED),
    (900981, "access_denied", ErrorKind.ADMIN_APPROVAL_REQUIRED),
    (50105, "access_denied", ErrorKind.BLOCKED),
    (50076, "interaction_required", ErrorKind.USER_ACTION),
    (50079, "interaction_required", ErrorKind.USER_ACTION),
    (53003, "access_denied", ErrorKind.BLOCKED),
    (700016, "unauthorized_client", ErrorKind.CONFIG),
    (70011, "invalid_scope", ErrorKind.CONFIG),
    (50011, "invalid_request", ErrorKind.CONFIG),
    (7000215, "invalid_client", ErrorKind.CONFIG),
    (7000222, "invalid_client", ErrorKind.CONFIG),
    (70008, "invalid_grant", ErrorKind.RECONSENT_REQUIRED),
    (700082, "invalid_grant", ErrorKind.RECONSENT_REQUIRED),
    (50173, "invalid_grant", ErrorKind.RECONSENT_REQUIRED),
    (700084, "invalid_grant", ErrorKind.RECONSENT_REQUIRED),
    (70043, "invalid_grant", ErrorKind.RECONSENT_REQUIRED),
    (54005, "invalid_grant", ErrorKind.REPLAY),
]


@pytest.mark.parametrize(("code", "error", "kind"), TABLE)
def test_classify_at_the_token_endpoint_uses_error_codes(
    code: int, error: str, kind: ErrorKind
) -> None:
    classified = classify(error, "wording that may change", [code])
    assert (classified.kind, classified.code, classified.error) == (kind, code, error)


@pytest.mark.parametrize(("code", "error", "kind"), TABLE)
def test_classify_at_the_redirect_reads_the_number_from_the_description(
    code: int, error: str, kind: ErrorKind
) -> None:
    description = f"AADSTS{code}: Some words.\r\nTrace ID: x\r\nCorrelation ID: y"
    classified = classify(error, description, None)
    assert (classified.kind, classified.code) == (kind, code)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("access_denied", ErrorKind.ADMIN_APPROVAL_REQUIRED),  # backed out of "Need admin approval"
        ("consent_required", ErrorKind.CONSENT_REQUIRED),  # prompt=none
        ("invalid_grant", ErrorKind.RECONSENT_REQUIRED),  # consent revoked since
        ("interaction_required", ErrorKind.CONSENT_REQUIRED),
    ],
)
def test_65001_depends_on_where_it_arrives(error: str, kind: ErrorKind) -> None:
    assert classify(error, "AADSTS65001: The user or administrator...", None).kind == kind
    assert classify(error, None, [65001]).kind == kind


def test_error_codes_win_over_the_description() -> None:
    classified = classify("invalid_grant", "AADSTS65004: declined", [54005])
    assert (classified.kind, classified.code) == (ErrorKind.REPLAY, 54005)


def test_the_first_known_code_counts() -> None:
    assert classify("invalid_grant", None, [9002313, 50173]).code == 50173


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("access_denied", ErrorKind.DECLINED),
        ("consent_required", ErrorKind.CONSENT_REQUIRED),
        ("interaction_required", ErrorKind.USER_ACTION),
        ("login_required", ErrorKind.USER_ACTION),
        ("invalid_grant", ErrorKind.RECONSENT_REQUIRED),
        ("invalid_client", ErrorKind.CONFIG),
        ("unauthorized_client", ErrorKind.CONFIG),
        ("invalid_request", ErrorKind.CONFIG),
        ("temporarily_unavailable", ErrorKind.TRANSIENT),
        ("server_error", ErrorKind.TRANSIENT),
        ("something_new", ErrorKind.UNKNOWN),
    ],
)
def test_without_a_known_number_the_oauth_error_decides(error: str, kind: ErrorKind) -> None:
    assert classify(error, None, None).kind == kind
    unknown_number = classify(error, "AADSTS1234567: new", None)
    assert (unknown_number.kind, unknown_number.code) == (kind, 1234567)


@pytest.mark.parametrize(
    "description",
    [
        None, "", "AADSTS", "AADSTS:", "AADSTSabc: x", "AADSTS65004abc: x", "aadsts65004: x",
        "Error AADSTS65004: not at the start", "AADSTS1234567890123: too long", "65004",
    ],
)  # fmt: skip
def test_garbage_descriptions_have_no_number(description: str | None) -> None:
    assert aadsts_number(description) is None
    assert classify("weird", description, None) == ErrorClass(ErrorKind.UNKNOWN, None, "weird")


def test_the_number_may_follow_white_space_and_end_the_text() -> None:
    assert aadsts_number("  AADSTS50076") == 50076
    assert aadsts_number("AADSTS50076 MFA") == 50076


def test_classify_nothing_is_unknown() -> None:
    assert classify(None, None, None) == ErrorClass(ErrorKind.UNKNOWN)
    assert classify("", "", []) == ErrorClass(ErrorKind.UNKNOWN)


def test_non_integer_error_codes_are_ignored() -> None:
    codes: list[Any] = ["54005", True, None, 3.5]
    classified = classify("invalid_grant", "AADSTS70008: expired", codes)
    assert (classified.kind, classified.code) == (ErrorKind.RECONSENT_REQUIRED, 70008)


def test_what_is_kept_is_safe_to_log() -> None:
    injected = classify(
        "access_denied\nFAKE LOG LINE",
        "AADSTS65004: x",
        None,
        trace_id="0123abcd-aaaa-bbbb-cccc-0123456789ab",
        correlation_id="<script>",
    )
    assert injected.error is None and injected.correlation_id is None
    assert injected.trace_id == "0123abcd-aaaa-bbbb-cccc-0123456789ab"
    assert injected.kind == ErrorKind.DECLINED  # the number still says what happened


def test_from_response_tolerates_any_types() -> None:
    assert from_response({"error": 5, "error_codes": "54005", "trace_id": []}) == ErrorClass(
        ErrorKind.UNKNOWN
    )
    answer = {
        "error": "invalid_grant",
        "error_description": "AADSTS50173: revoked",
        "error_codes": [50173],
        "correlation_id": "11111111-2222-3333-4444-555555555555",
    }
    classified = from_response(answer)
    assert classified.kind == ErrorKind.RECONSENT_REQUIRED
    assert classified.correlation_id == answer["correlation_id"]


def test_describe_reference_and_the_exception() -> None:
    classified = classify("access_denied", "AADSTS65004: no", None, correlation_id="abcdef12-0000")
    assert (
        classified.describe()
        == "declined (access_denied, AADSTS65004, correlation_id=abcdef12-0000)"
    )
    assert str(classified) == classified.describe()
    assert classified.reference == "AADSTS65004"
    assert ErrorClass(ErrorKind.TRANSIENT, error="network_error").reference == "network_error"
    exc = MicrosoftError(classified)
    assert isinstance(exc, ConsentProxyError) and exc.error is classified
    assert exc.status == 502 and exc.description == classified.describe()
    assert ErrorKind.DECLINED == "declined"  # compares as the string it is
