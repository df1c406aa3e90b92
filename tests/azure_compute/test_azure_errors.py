"""The classification skeleton both Azure tiers share, with a made-up tier's names and hints."""

from __future__ import annotations

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ODataV4Format,
    ServiceRequestError,
)

from adapters.compute._azure_errors import ErrorClassifier, Refusal
from domain.jobs import PermanentTierError, TransientBackendError

SECRET = "s3cr3t-token-value"

TIER = ErrorClassifier(
    service="Azure Thing",
    auth_hint="Grant the 'Thing Reader' role",
    refusals=(
        Refusal(
            matches=lambda code, text: "quota" in (code + text).lower(),
            what="quota gone",
            hint="Ask for more",
            default_code="QuotaExceeded",
        ),
        Refusal(
            matches=lambda _code, text: "quota" in text or "disk" in text,
            what="disk full",
            hint="Free some space",
            default_code="DiskFull",
        ),
    ),
)


def http_error(
    status: int, code: str, message: str, cls: type[HttpResponseError] = HttpResponseError
) -> HttpResponseError:
    err = cls(message=message)
    err.status_code = status
    err.error = ODataV4Format({"code": code or "unset", "message": message})
    err.error.code = code
    return err


def test_network_errors_are_transient() -> None:
    result = TIER.classify(ServiceRequestError(f"connection refused {SECRET}"), "reading job 'j'")
    assert isinstance(result, TransientBackendError)
    assert result.code == "Network"
    assert str(result) == "Azure Thing unreachable while reading job 'j': ServiceRequestError"


@pytest.mark.parametrize("status", [401, 403])
def test_authorization_is_permanent_with_the_tier_hint_before_any_refusal(status: int) -> None:
    err = http_error(status, "AuthorizationFailed", f"no quota for {SECRET}")
    result = TIER.classify(err, "submitting job 'j'", [SECRET])
    assert isinstance(result, PermanentTierError)
    assert result.code == "AuthorizationFailed"
    assert str(result) == (
        f"Azure Thing refused submitting job 'j' (HTTP {status} AuthorizationFailed): "
        "no quota for ***. Grant the 'Thing Reader' role"
    )


def test_client_authentication_error_without_a_code_is_an_authorization_failure() -> None:
    err = http_error(400, "", "token expired", cls=ClientAuthenticationError)
    result = TIER.classify(err, "reading job 'j'")
    assert isinstance(result, PermanentTierError)
    assert result.code == "AuthorizationFailed"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_transient_before_any_refusal(status: int) -> None:
    result = TIER.classify(http_error(status, "", "quota busy"), "reading job 'j'")
    assert isinstance(result, TransientBackendError)
    assert result.code == str(status)
    assert str(result) == (
        f"Azure Thing busy while reading job 'j' (HTTP {status} ), the SDK's retries are used "
        "up: quota busy"
    )


def test_the_first_matching_refusal_names_the_failure_and_its_hint() -> None:
    result = TIER.classify(http_error(400, "", "quota and disk"), "creating pool 'p'")
    assert isinstance(result, PermanentTierError)
    assert result.code == "QuotaExceeded"
    assert str(result) == (
        "Azure Thing quota gone while creating pool 'p' (): quota and disk. Ask for more"
    )
    second = TIER.classify(http_error(409, "NoSpace", "disk"), "creating pool 'p'")
    assert second.code == "NoSpace"
    assert (
        str(second)
        == "Azure Thing disk full while creating pool 'p' (NoSpace): disk. Free some space"
    )


def test_refusals_see_the_text_with_secrets_removed() -> None:
    # The secret itself says "disk": once redacted, only the generic rejection is left.
    result = TIER.classify(http_error(400, "Bad", "disk"), "submitting job 'j'", ["disk"])
    assert isinstance(result, PermanentTierError)
    assert str(result) == "Azure Thing rejected submitting job 'j' (HTTP 400 Bad): ***"


def test_other_http_errors_are_permanent_rejections() -> None:
    result = TIER.classify(http_error(404, "", f"no job {SECRET}"), "reading job 'j'", [SECRET])
    assert isinstance(result, PermanentTierError)
    assert result.code == "404"
    assert str(result) == "Azure Thing rejected reading job 'j' (HTTP 404 ): no job ***"


def test_anything_else_is_unexpected_and_redacted() -> None:
    result = TIER.classify(ValueError(f"bad {SECRET}"), "reading job 'j'", [SECRET])
    assert isinstance(result, PermanentTierError)
    assert result.code == "Unexpected"
    assert str(result) == "unexpected error while reading job 'j': ValueError: bad ***"
