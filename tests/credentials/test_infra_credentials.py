"""infra/ gives the identities the Key Vault roles the credentials design needs, and passes the
model credentials as names (read as text, as tests/deploy/test_infra.py reads the templates)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.test_infra import template_settings

INFRA = Path(__file__).resolve().parents[2] / "infra"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
IDENTITY_OPERATOR = "f1a07417-d97a-45cb-824c-7a7467783830"


def _assignments(text: str) -> dict[str, tuple[str, str]]:
    """role assignment resource -> (role variable, principal expression)."""
    found = {}
    for m in re.finditer(
        r"resource (\w+) 'Microsoft\.Authorization/roleAssignments@[^']+' = [^{]*\{(.*?)\n\}",
        text,
        re.S,
    ):
        body = m.group(2)
        role = re.search(r"roleDefinitions', (\w+)\)", body)
        principal = re.search(r"principalId: (\w+)", body)
        assert role and principal, m.group(1)
        found[m.group(1)] = (role.group(1), principal.group(1))
    return found


def _role_ids(text: str) -> dict[str, str]:
    return dict(re.findall(r"^var (\w+) = '([0-9a-f-]{36})'", text, re.M))


def test_the_app_writes_and_the_jobs_read_the_vault() -> None:
    text = (INFRA / "app" / "keyvault.bicep").read_text(encoding="utf-8")
    roles, assignments = _role_ids(text), _assignments(text)
    by_principal = {principal: roles[role] for role, principal in assignments.values()}
    assert by_principal == {
        "identityPrincipalId": SECRETS_OFFICER,  # the heartbeat tokens; its references
        "jobIdentityPrincipalId": SECRETS_USER,  # read only
    }


def test_the_app_may_attach_the_jobs_identity_to_compute() -> None:
    text = (INFRA / "app" / "rbac.bicep").read_text(encoding="utf-8")
    roles, assignments = _role_ids(text), _assignments(text)
    (scope,) = re.findall(r"scope: (jobIdentity)\b", text)
    assert scope
    assert roles[assignments["identityAssignsJobIdentity"][0]] == IDENTITY_OPERATOR


def test_model_credentials_are_names_not_references() -> None:
    settings = template_settings()
    for name in ("MODEL_SECRETS_VAULT_URL", "OPENAI_API_KEY_SECRET", "AZURE_API_KEY_SECRET"):
        assert "@Microsoft.KeyVault" not in settings[name], name
    assert settings["MODEL_SECRETS_VAULT_URL"] == "modelSecretsVaultUrl"
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert "modelSecretsVaultUrl: vault.outputs.uri" in main
    # The keys themselves are secure parameters, stored only as vault secrets.
    for param in ("openAiApiKey", "azureOpenAiApiKey"):
        assert re.search(rf"@secure\(\)\n(@description\([^\n]*\)\n)?param {param} string", main)
