"""Error helpers shared by the Azure ML and Azure Batch backends.

The SDKs' own retry policies have already retried throttling (honouring Retry-After) and 5xx
before an error reaches these helpers; what is left is classified once, here, for the policy.
"""

from __future__ import annotations

from collections.abc import Iterable

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

REDACTED = "***"

# Retryable on the same tier: throttling, server errors and timeouts.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove secret values from text that may echo a request (service error messages do)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def status_code(err: BaseException) -> int | None:
    return getattr(err, "status_code", None) if isinstance(err, HttpResponseError) else None


def is_network_error(err: BaseException) -> bool:
    return isinstance(err, ServiceRequestError | ServiceResponseError)


def is_auth_error(err: BaseException) -> bool:
    return isinstance(err, ClientAuthenticationError) or status_code(err) in (401, 403)


def is_transient(err: BaseException) -> bool:
    return is_network_error(err) or status_code(err) in TRANSIENT_STATUS


def service_message(err: HttpResponseError) -> str:
    """The service's own error text without the SDK's multi-line decoration."""
    if err.error is not None and err.error.message:
        return str(err.error.message)
    return str(err.message or err.reason or "").split("\n")[0]


def service_code(err: HttpResponseError) -> str:
    return str(err.error.code) if err.error is not None and err.error.code else ""
