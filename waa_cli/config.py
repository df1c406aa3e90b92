"""Where the client finds the API: the base URL and the function key.

Each comes from the first of: the command-line option, the environment (WAA_EVAL_URL,
WAA_EVAL_KEY), the config file (WAA_EVAL_CONFIG, else $XDG_CONFIG_HOME/waa-eval/config.toml,
else ~/.config/waa-eval/config.toml), which holds

    url = "https://<app>.azurewebsites.net"
    key = "<function key>"

The key is sent in the `x-functions-key` header, the header Azure Functions reads a function
key from (learn.microsoft.com/azure/azure-functions/function-keys-how-to: "provide the key in
the x-functions-key header" or the `code` query parameter). It is never printed.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

URL_ENV = "WAA_EVAL_URL"
KEY_ENV = "WAA_EVAL_KEY"
CONFIG_ENV = "WAA_EVAL_CONFIG"
DEFAULT_URL = "http://127.0.0.1:7071"  # `func start` and `python -m devhost serve`


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and where."""


@dataclass(frozen=True)
class Target:
    base_url: str
    key: str | None
    # Where the URL came from ("--url", "WAA_EVAL_URL", the config file, or the default).
    url_source: str

    def __repr__(self) -> str:  # never show the key, not even in a traceback
        shown = "set" if self.key else "none"
        return f"Target(base_url={self.base_url!r}, key=<{shown}>, url_source={self.url_source!r})"


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "waa-eval" / "config.toml"


def _read_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        if os.environ.get(CONFIG_ENV):
            raise ConfigError(f"config file {path} ({CONFIG_ENV}) does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {path}: {err}") from None
    out: dict[str, str] = {}
    for name in ("url", "key"):
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config file {path}: {name} must be a non-empty string")
        out[name] = value
    unknown = sorted(set(data) - {"url", "key"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r} (known: url, key)")
    return out


def resolve(url: str | None, key: str | None) -> Target:
    path = config_path()
    file = _read_file(path)
    if url:
        base, source = url, "--url"
    elif os.environ.get(URL_ENV):
        base, source = os.environ[URL_ENV], URL_ENV
    elif "url" in file:
        base, source = file["url"], str(path)
    else:
        base, source = DEFAULT_URL, "the default"
    base = base.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"url from {source}: must start with http:// or https://")
    if base.endswith("/api"):
        base = base[: -len("/api")]
    chosen_key = key or os.environ.get(KEY_ENV) or file.get("key") or None
    return Target(base_url=base, key=chosen_key, url_source=source)
