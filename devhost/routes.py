"""HTTP trigger routes, matched like the Functions host's ASP.NET route templates.

Supported template parts: literal segments (matched case-insensitively, as ASP.NET does),
`{name}`, optional `{name?}`, catch-all `{*name}`, and the common inline constraints
(`{id:guid}`, `{n:int}`, `{flag:bool}`, `{s:alpha}`, ...). A request that matches no route is a 404.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "decimal": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?",
    "float": r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[{(]?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}[)}]?",
    "datetime": r"[^/]+",
}
_PARAM = re.compile(r"\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


class RouteTemplateError(ValueError):
    """A route template the devhost cannot parse."""


@dataclass(frozen=True)
class Route:
    function_name: str
    template: str
    methods: tuple[str, ...]
    pattern: re.Pattern[str]

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Route parameters when `path` (below the route prefix) matches, else None."""
        if method.upper() not in self.methods:
            return None
        path = path.strip("/")
        m = self.pattern.fullmatch(f"/{path}" if path else "")
        if m is None:
            return None
        return {k: unquote(v) for k, v in m.groupdict().items() if v is not None}


def _param_regex(star: str | None, name: str, rest: str) -> tuple[str, bool]:
    optional = rest.endswith("?")
    rest = rest.removesuffix("?")
    default = None
    if "=" in rest:
        rest, default = rest.split("=", 1)
    regex = r".*" if star else r"[^/]+"
    for constraint in filter(None, rest.split(":")):
        key = constraint.split("(", 1)[0].lower()
        if key not in _CONSTRAINTS:
            raise RouteTemplateError(f"unsupported route constraint {constraint!r} in {{{name}}}")
        regex = _CONSTRAINTS[key]
    return f"(?P<{name}>{regex})", optional or default is not None or bool(star)


def compile_template(template: str) -> re.Pattern[str]:
    segments = [s for s in template.strip("/").split("/") if s]
    parts: list[str] = []
    for seg in segments:
        pos = 0
        seg_regex = ""
        optional_segment = False
        for m in _PARAM.finditer(seg):
            seg_regex += re.escape(seg[pos : m.start()])
            group, optional = _param_regex(m["star"], m["name"], m["rest"])
            seg_regex += group
            optional_segment = optional and m.start() == 0 and m.end() == len(seg)
            pos = m.end()
        seg_regex += re.escape(seg[pos:])
        if "{" in seg_regex.replace(r"\{", "") and "(?P<" not in seg_regex:
            raise RouteTemplateError(f"malformed route template {template!r}")
        parts.append(f"(?:/{seg_regex})?" if optional_segment else f"/{seg_regex}")
    return re.compile("(?i:" + "".join(parts) + ")")


def build_route(function_name: str, template: str | None, methods: Iterable[str] | None) -> Route:
    tmpl = template if template is not None else function_name
    allowed = tuple(m.upper() for m in methods) if methods else ALL_METHODS
    return Route(function_name, tmpl, allowed, compile_template(tmpl))


def find_route(
    routes: Iterable[Route], method: str, path: str
) -> tuple[Route, dict[str, str]] | None:
    # Literal-heavy templates win over parameterised ones, as ASP.NET orders routes by precedence.
    for route in sorted(routes, key=lambda r: (r.template.count("{"), -len(r.template))):
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None
