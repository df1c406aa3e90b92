"""The runner's environment as the cloud tiers (Azure ML, Batch) set it (CONTRACT.md, "Runner
environment"): secrets never travel in a job definition, which a workspace or account reader can
see; only where the job reads them itself at start (a Key Vault and secret names) does.
"""

from __future__ import annotations

from domain.jobs import JobSpec, PermanentTierError


def runner_environment(spec: JobSpec) -> dict[str, str]:
    """`spec.environment` plus how the runner finds its secrets: the Key Vault and the names of
    its secrets when the attempt has a vault secret for its heartbeat token (never the token
    itself), else the token as WAA_HEARTBEAT_TOKEN (no vault configured: the tier's only way)."""
    if spec.heartbeat_token_secret and not spec.secrets_vault_url:
        raise PermanentTierError(
            "the job's heartbeat token is a Key Vault secret but the job names no vault "
            "(secrets_vault_url)",
            code="InvalidJobSpec",
        )
    env = dict(spec.environment)
    # Only the control plane decides where secrets come from.
    for name in ("WAA_HEARTBEAT_TOKEN", "WAA_HEARTBEAT_TOKEN_SECRET", "WAA_SECRETS_FILE"):
        env.pop(name, None)
    if spec.secrets_vault_url:
        env["WAA_SECRETS_VAULT_URL"] = spec.secrets_vault_url
    if spec.secret_env:
        env["WAA_SECRETS"] = ",".join(f"{k}={v}" for k, v in sorted(spec.secret_env.items()))
    if spec.heartbeat_token_secret:
        env["WAA_HEARTBEAT_TOKEN_SECRET"] = spec.heartbeat_token_secret
    else:
        env["WAA_HEARTBEAT_TOKEN"] = spec.heartbeat_token
    return env


def job_secrets(spec: JobSpec) -> tuple[str, ...]:
    """Values to redact from every message about this job."""
    return (spec.heartbeat_token,) if spec.heartbeat_token else ()
