"""Error helpers shared by the Azure ML and Azure Batch backends.

The SDKs' own retry policies have already retried throttling (honouring Retry-After) and 5xx
before an error reaches these helpers; what is left is classified once, here, for the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from adapters.logs import redact
from domain.jobs import BackendError, PermanentTierError, TransientBackendError

# Retryable on the same tier: throttling, server errors and timeouts.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


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


@dataclass(frozen=True)
class Refusal:
    """A permanent refusal one tier recognises in the service's answer, and what to do about it.

    The message reads "<service> <what> while <action> (<code>): <service text>. <hint>".
    """

    # (service error code, service message with secrets removed) -> is this the refusal?
    matches: Callable[[str, str], bool]
    what: str
    hint: str
    # Reported when the service sent no error code.
    default_code: str


@dataclass(frozen=True)
class ErrorClassifier:
    """Maps one Azure tier's SDK errors to the policy's error kinds.

    Every tier answers the same way: network failures and throttling/5xx left over after the
    SDK's retries are transient; authorization, the tier's known refusals and any other HTTP
    error are permanent for the tier. Only the service's name and the hints that tell a user
    what to fix differ between tiers.
    """

    service: str
    # Appended to authorization failures: which role or setting to check.
    auth_hint: str
    # Checked in order after authorization and throttling, before the generic rejection.
    refusals: tuple[Refusal, ...] = ()

    def classify(
        self, err: BaseException, action: str, secrets: Iterable[str] = ()
    ) -> BackendError:
        """`action` completes "while ...", e.g. "submitting job 'x'"; `secrets` are removed
        from every message because service errors may echo the request."""
        secrets = tuple(secrets)
        if is_network_error(err):
            return TransientBackendError(
                f"{self.service} unreachable while {action}: {type(err).__name__}", code="Network"
            )
        if isinstance(err, HttpResponseError):
            status = status_code(err)
            code = service_code(err)
            text = redact(service_message(err), secrets)
            if is_auth_error(err):
                return PermanentTierError(
                    f"{self.service} refused {action} (HTTP {status} {code}): {text}. "
                    f"{self.auth_hint}",
                    code=code or "AuthorizationFailed",
                )
            if is_transient(err):
                return TransientBackendError(
                    f"{self.service} busy while {action} (HTTP {status} {code}), the SDK's "
                    f"retries are used up: {text}",
                    code=code or str(status),
                )
            for refusal in self.refusals:
                if refusal.matches(code, text):
                    return PermanentTierError(
                        f"{self.service} {refusal.what} while {action} ({code}): {text}. "
                        f"{refusal.hint}",
                        code=code or refusal.default_code,
                    )
            return PermanentTierError(
                f"{self.service} rejected {action} (HTTP {status} {code}): {text}",
                code=code or str(status),
            )
        return PermanentTierError(
            f"unexpected error while {action}: {type(err).__name__}: {redact(str(err), secrets)}",
            code="Unexpected",
        )
