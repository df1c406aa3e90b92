"""infra/ sets every app setting the app reads, and nothing the app does not know.

There is no Bicep compiler here, so the templates are read as text, by one documented rule:
an app setting is a line `NAME: value` inside the object literal of a variable whose name ends in
`AppSettings` (`var controlPlaneAppSettings = { ... }`, also behind `cond ? {} : { ... }`), and
the function app receives exactly the union of those variables (checked below too).

What the app reads is derived from the code, so this stays true as settings are added:
- every field of `adapters.settings.AppSettings`, by its alias (the app setting's name);
- every environment variable the app's modules read directly (`os.environ.get(...)`,
  `os.getenv(...)`, `os.environ[...]`, `env.get(NAME)` on an environ mapping), found in their
  syntax trees, with module-level string constants resolved (adapters/telemetry.py reads
  APPLICATIONINSIGHTS_CONNECTION_STRING that way);
- every `%NAME%` reference in the app's code and host.json (bindings and host.json read app
  settings so), and the connection names host.json gives the Durable storage provider.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import get_args

import yaml
from pydantic import SecretStr

from adapters.settings import AppSettings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
APP_PACKAGES = ("activities", "adapters", "domain", "orchestrations", "triggers")

# Read by the app but left unset by the template on purpose.
NOT_SET_ON_PURPOSE = {
    "AzureWebJobsStorage": "identity-based connection: the template sets AzureWebJobsStorage__*; "
    "the storage account has no usable key (allowSharedKeyAccess false)",
    "AzureWebJobsStorage__accountName": "AzureWebJobsStorage__tableServiceUri is set instead",
    "BATCH_ACCOUNT_NAME": "Batch shared-key auth; the identity has Azure Batch Data Contributor",
    "BATCH_ACCOUNT_KEY": "Batch shared-key auth; the identity has Azure Batch Data Contributor",
    "SIM_PROFILE": "the simulator only; the template sets COMPUTE_BACKEND=azure",
    "SIM_SEED": "the simulator only; the template sets COMPUTE_BACKEND=azure",
    "PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME": "unset means the root logger, which is wanted",
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "adapters/telemetry.py sets its own default",
    "ALERT_WEBHOOK_URL": "optional: the user's own Slack/Teams webhook, added as a Key Vault "
    "reference after deployment (docs/azure-setup.md, 'Alerts')",
}

# Set by the template, read by the platform rather than the app.
PLATFORM_SETTINGS = {
    "PYTHON_ISOLATE_WORKER_DEPENDENCIES": "the Python worker loads the app's azure-functions "
    "(CloudEvents decoding) instead of its own copy",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "the Python worker configures OpenTelemetry",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "the Azure Monitor exporter and the host "
    "authenticate to Application Insights with the identity (local auth is off)",
}

# Settings a Flex Consumption app must not carry: the plan configures the runtime and the
# deployment itself (learn.microsoft.com/azure/azure-functions/functions-app-settings,
# "Flex Consumption plan deprecations"; the official quickstart sets none of them).
FLEX_CONSUMPTION_DEPRECATED = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_NODE_DEFAULT_VERSION",
}

# ------------------------------------------------------------------------- the template side
_SETTINGS_VAR = re.compile(r"^var (\w+AppSettings) =", re.MULTILINE)
_SETTING_LINE = re.compile(r"^\s*'?([A-Za-z_][A-Za-z0-9_]*)'?\s*:\s*(.+?)\s*$")


def _statement(text: str, start: int) -> str:
    """The text of the `var` statement from `start`: up to the first line break outside braces
    and parentheses that does not continue a `? :` expression."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c in "{(":
            depth += 1
        elif c in "})":
            depth -= 1
        elif c == "\n" and depth == 0 and not text[i + 1 :].lstrip(" ").startswith(("?", ":")):
            return text[start:i]
        i += 1
    return text[start:]


def template_settings() -> dict[str, str]:
    """Every app setting the templates set: name -> value expression (as written)."""
    found: dict[str, str] = {}
    for path in sorted(INFRA.rglob("*.bicep")):
        text = path.read_text(encoding="utf-8")
        for match in _SETTINGS_VAR.finditer(text):
            body = _statement(text, match.end())
            for line in body.splitlines():
                setting = _SETTING_LINE.match(line)
                if setting and not line.lstrip().startswith("//"):
                    name, value = setting.groups()
                    assert name not in found, f"{name} is set twice ({path.name})"
                    found[name] = value
    return found


def settings_variables() -> dict[str, set[str]]:
    return {
        path.name: set(_SETTINGS_VAR.findall(path.read_text(encoding="utf-8")))
        for path in INFRA.rglob("*.bicep")
    }


# ------------------------------------------------------------------------------ the app side
def _environ_names(tree: ast.Module) -> set[str]:
    """Names bound to the process environment: `environ`, and any name assigned from an
    expression that mentions `os.environ` (`env = os.environ if environ is None else environ`),
    not a dict that merely holds a job's environment."""
    names = {"environ"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(n, ast.Attribute) and n.attr == "environ" for n in ast.walk(node.value)
        ):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _env_reads(tree: ast.Module) -> set[str]:
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    environ_names = _environ_names(tree)

    def is_environ(node: ast.expr) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr == "environ"
        return isinstance(node, ast.Name) and node.id in environ_names

    def literal(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    names: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in {"get", "setdefault", "pop"}
                and is_environ(func.value)
            ) or (isinstance(func, ast.Attribute | ast.Name) and _name(func) == "getenv"):
                names.add(literal(node.args[0]))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and is_environ(node.value)
        ):
            names.add(literal(node.slice))
    return {n for n in names if n}


def _setting_references(values: list[str]) -> set[str]:
    """`%NAME%` app-setting references: a whole string that is one (binding arguments such as
    schedule="%SWEEP_SCHEDULE%", host.json's hubName), not a strftime format."""
    return {m.group(1) for v in values if (m := re.fullmatch(r"%([A-Za-z_]\w*)%", v))}


def _json_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def _name(node: ast.Attribute | ast.Name) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id


def app_sources() -> list[Path]:
    files = [ROOT / "function_app.py"]
    for package in APP_PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def app_settings_read() -> set[str]:
    read = {info.alias for info in AppSettings.model_fields.values() if info.alias}
    for path in app_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        read |= _env_reads(tree)
        strings = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        read |= _setting_references(strings)
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    return read | _setting_references(_json_strings(host))


def host_connection_names() -> set[str]:
    """Connection names host.json's Durable storage provider uses: a connection string setting
    or the prefix of an identity-based one (NAME__...)."""
    provider = json.loads((ROOT / "host.json").read_text())["extensions"]["durableTask"]
    options = provider.get("storageProvider", {})
    names = {options.get("connectionName"), options.get("connectionStringName")}
    return {n for n in names if n} or {"AzureWebJobsStorage"}


# ------------------------------------------------------------------------------------ tests
def test_the_settings_rule_finds_the_app_settings() -> None:
    found = template_settings()
    # A sample of what must be there, so a broken rule cannot pass by finding nothing.
    assert {"HEARTBEAT_SECRET", "COMPUTE_BACKEND", "AzureWebJobsStorage__tableServiceUri"} <= set(
        found
    )
    # The function app gets exactly the union of the *AppSettings variables.
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    api = (INFRA / "app" / "api.bicep").read_text(encoding="utf-8")
    (main_union,) = re.findall(r"^\s*appSettings: union\(([^)]*)\)", main, re.MULTILINE)
    (site_union,) = re.findall(r"^\s*appSettingsKeyValuePairs: union\(([^)]*)\)", api, re.M)
    variables = settings_variables()
    assert {a.strip() for a in main_union.split(",")} == variables["main.bicep"]
    assert {a.strip() for a in site_union.split(",")} == {"appSettings"} | variables["api.bicep"]


def test_every_setting_the_app_reads_is_set_by_the_template() -> None:
    read, template = app_settings_read(), set(template_settings())
    missing = read - template - set(NOT_SET_ON_PURPOSE)
    assert not missing, f"the app reads these and infra/ does not set them: {sorted(missing)}"
    stale = set(NOT_SET_ON_PURPOSE) - read
    assert not stale, f"NOT_SET_ON_PURPOSE lists settings the app no longer reads: {stale}"
    overlap = set(NOT_SET_ON_PURPOSE) & template
    assert not overlap, f"listed as unset on purpose but set by infra/: {overlap}"
    for connection in host_connection_names():
        assert any(s == connection or s.startswith(connection + "__") for s in template), (
            f"host.json's Durable storage connection {connection} is not configured"
        )


def test_the_template_sets_nothing_the_app_does_not_know() -> None:
    read, template = app_settings_read(), set(template_settings())
    connections = host_connection_names()
    unknown = {
        s
        for s in template - read - set(PLATFORM_SETTINGS)
        if not any(s.startswith(c + "__") for c in connections)  # the host's identity parts
    }
    assert not unknown, f"infra/ sets settings nothing reads: {sorted(unknown)}"
    assert not set(PLATFORM_SETTINGS) & read, "a platform setting is read by the app: move it"
    assert not template & FLEX_CONSUMPTION_DEPRECATED


def test_secrets_are_key_vault_references() -> None:
    template = template_settings()
    secrets = {
        info.alias
        for info in AppSettings.model_fields.values()
        if info.alias and SecretStr in (info.annotation, *get_args(info.annotation))
    }
    assert "HEARTBEAT_SECRET" in secrets
    for name in secrets & set(template):
        assert template[name].startswith("'@Microsoft.KeyVault("), f"{name} is not a reference"


def test_the_app_reads_what_the_template_identity_based_storage_needs() -> None:
    template = template_settings()
    assert template["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert template["COMPUTE_BACKEND"] == "'azure'"
    assert template["PUBLIC_BASE_URL"].startswith("'https://")


def test_parameters_file_matches_the_template() -> None:
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    declared = dict(re.findall(r"^param (\w+) \w+( =)?", main, re.MULTILINE))
    given = set(json.loads((INFRA / "main.parameters.json").read_text())["parameters"])
    assert given <= set(declared), f"not parameters of main.bicep: {given - set(declared)}"
    # azd generates the heartbeat secret (@metadata type 'generate'); a value here would win.
    assert "heartbeatSecret" not in given
    required = {name for name, default in declared.items() if not default}
    assert required - given == {"heartbeatSecret"}


def test_azure_yaml_deploys_this_folder_and_runs_the_hook() -> None:
    spec = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert spec["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    for platform in ("posix", "windows"):
        run = spec["hooks"]["postdeploy"][platform]["run"]
        assert (ROOT / run).is_file(), run
    # azd finds the function app of the "api" service by this tag.
    assert "'azd-service-name': 'api'" in (INFRA / "app" / "api.bicep").read_text()
