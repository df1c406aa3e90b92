"""The files a deployment publishes from a folder with a `.funcignore`, as the two tools that
read it select them. Test support for tests/deploy; no third-party code (pathspec is not
installed, so gitignore matching is written out here).

- `azd deploy` (what `azd up` runs) applies gitignore syntax ("Configure service packaging
  file exclusions", learn.microsoft.com/azure/developer/azure-developer-cli/
  service-packaging-ignore-files): `gitignore_files`.
- `func azure functionapp publish` (Core Tools) reads the same file with its own parser, a port
  of codemix/gitignore-parser (azure-functions-core-tools src/Cli/func/Common/GitIgnoreParser.cs,
  used by FileSystemHelpers.GetLocalFiles): `core_tools_files`, re-implemented from that source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# ------------------------------------------------------------------------------- gitignore


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _segment(part: str) -> str:
    """One path segment of a gitignore pattern as a regex ("*" and "?" never cross "/")."""
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in part[i + 1 :]:
            end = part.index("]", i + 1)
            body = part[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _translate(pattern: str) -> str:
    parts = pattern.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            # "**/x" any depth before, "x/**" everything inside, "a/**/b" zero or more dirs.
            out.append(".*" if last else "(?:.*/)?")
        else:
            out.append(_segment(part) + ("" if last else "/"))
    return "".join(out)


def parse_gitignore(text: str) -> list[_Rule]:
    """gitignore(5): blank lines and '#' comments skipped; '!' negates; a trailing '/' matches
    directories only; a '/' at the start or in the middle anchors the pattern at the root, else
    it matches at any depth."""
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        body = _translate(line.lstrip("/"))
        regex = body if anchored else "(?:.*/)?" + body
        rules.append(_Rule(re.compile(regex), negate, dir_only))
    return rules


def _ignored(rules: list[_Rule], path: str, is_dir: bool) -> bool:
    ignored = False
    for rule in rules:  # the last matching rule decides
        if rule.dir_only and not is_dir:
            continue
        if rule.regex.fullmatch(path):
            ignored = not rule.negate
    return ignored


def gitignore_files(root: Path, text: str) -> set[str]:
    """Every file under `root` the patterns keep, as root-relative POSIX paths. An excluded
    directory is not descended into: git cannot re-include a file below one."""
    rules = parse_gitignore(text)
    kept: set[str] = set()
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if not _ignored(rules, prefix + d, True)]
        kept.update(prefix + f for f in files if not _ignored(rules, prefix + f, False))
    return kept


# ------------------------------------------------------------------------------- Core Tools

# FileSystemHelpers.GetLocalFiles skips these by name at every depth, case-insensitively,
# whatever .funcignore says.
CORE_TOOLS_SKIPPED_DIRS = frozenset({".git", ".vscode"})
CORE_TOOLS_SKIPPED_FILES = frozenset(
    {".funcignore", ".gitignore", "local.settings.json", "project.lock.json"}
)

_CORE_TOOLS_SPECIALS = re.compile(r"[\-\[\]\/\{\}\(\)\+\?\.\\\^\$\|]")


def _core_tools_regex(patterns: list[str]) -> re.Pattern[str]:
    if not patterns:
        return re.compile(r"$^")

    def prepare(pattern: str) -> str:
        escaped = _CORE_TOOLS_SPECIALS.sub(lambda m: "\\" + m.group(0), pattern)
        return escaped.replace("**", "(.+)").replace("*", "([^\\/]+)")

    joined = ")|(".join(prepare(p) for p in sorted(patterns))
    # ECMAScript's \b is ASCII-only, as re.ASCII makes Python's.
    return re.compile(f"^(({joined}))\\b", re.ASCII)


def core_tools_accepts(text: str) -> Callable[[str], bool]:
    """GitIgnoreParser.Accepts: lines trimmed, '#' and blank skipped, a leading '!' makes a
    negative pattern and a leading '/' is dropped; a path is accepted when a negative pattern
    matches it or no positive one does (each anchored at the path's start, then \\b)."""
    positive: list[str] = []
    negative: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        target = positive
        if line.startswith("!"):
            line, target = line[1:], negative
        if line.startswith("/"):
            line = line[1:]
        target.append(line)
    pos, neg = _core_tools_regex(positive), _core_tools_regex(negative)
    return lambda path: bool(neg.match(path)) or not pos.match(path)


def core_tools_files(root: Path, text: str) -> set[str]:
    accepts = core_tools_accepts(text)
    kept: set[str] = set()
    skipped_dirs = {d.lower() for d in CORE_TOOLS_SKIPPED_DIRS}
    skipped_files = {f.lower() for f in CORE_TOOLS_SKIPPED_FILES}
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d.lower() not in skipped_dirs]
        rel = Path(here).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        kept.update(
            prefix + f for f in files if f.lower() not in skipped_files and accepts(prefix + f)
        )
    return kept
