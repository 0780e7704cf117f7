"""HTTP route templates as the Functions host reads them (the usual part of ASP.NET Core routes).

``items/{kind}/{id}``: each ``{name}`` matches one path segment; ``{name?}`` is optional (last
segments only); ``{name:int}``, ``{name:alpha}``, ``{name:guid}``, ``{name:bool}`` and
``{name:long}`` are honoured, other constraints (``length(3)``, ``regex(...)``) are ignored;
``{*rest}`` takes the rest of the path. Literal text matches case-insensitively. When several
templates match, literal segments win over parameters, as in ASP.NET Core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_TOKEN = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?:true|false)",
    "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}",
}
# Rank of a segment for precedence: lower wins when two templates match the same path.
_LITERAL, _CONSTRAINED, _PARAM, _OPTIONAL, _CATCH_ALL = range(5)


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]  # route parameter names, in group order
    rank: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        """Route parameters (percent-decoded) when ``path`` (no prefix, no slashes around) fits."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {
            name: unquote(value)
            for name, value in zip(self.names, found.groups(), strict=True)
            if value is not None
        }


def _parameter(token: str) -> tuple[str, str, bool, bool]:
    """``{token}`` → (name, regex for its value, optional, catch-all)."""
    catch_all = token.startswith("*")
    token = token.lstrip("*")
    optional = token.endswith("?")
    token = token.rstrip("?")
    name, _, constraint = token.partition(":")
    name = name.partition("=")[0].strip()  # a default value (name=x) is not supported; ignored
    if not name:
        raise ValueError(f"empty route parameter in {{{token}}}")
    regex = ".*" if catch_all else "[^/]+"
    for part in constraint.split(":") if constraint else []:
        kind = part.partition("(")[0].strip().lower()
        if kind in _CONSTRAINTS:
            regex = _CONSTRAINTS[kind]
    return name, regex, optional, catch_all


def compile_route(template: str) -> RouteTemplate:
    """Compile a route template (without the host's routePrefix); ``ValueError`` if malformed."""
    segments = [s for s in template.strip("/").split("/") if s] if template.strip("/") else []
    regex = ""
    names: list[str] = []
    rank: list[int] = []
    for index, segment in enumerate(segments):
        separator = "/" if index else ""
        whole = _TOKEN.fullmatch(segment)
        if whole:
            name, value, optional, catch_all = _parameter(whole.group(1))
            names.append(name)
            group = f"(?P<p{len(names)}>{value})"
            if optional or catch_all:
                regex += f"(?:{separator}{group})?"
                rank.append(_CATCH_ALL if catch_all else _OPTIONAL)
            else:
                regex += separator + group
                rank.append(_CONSTRAINED if value != "[^/]+" else _PARAM)
            continue
        # A literal segment, possibly with parameters inside (e.g. "{name}.{ext}").
        regex += separator
        position = 0
        has_param = False
        for token in _TOKEN.finditer(segment):
            regex += re.escape(segment[position : token.start()])
            name, value, _, _ = _parameter(token.group(1))
            names.append(name)
            regex += f"(?P<p{len(names)}>{value if value != '[^/]+' else '[^/]+?'})"
            position = token.end()
            has_param = True
        if "{" in segment[position:] or "}" in segment[position:]:
            raise ValueError(f"unbalanced braces in route template {template!r}")
        regex += re.escape(segment[position:])
        rank.append(_CONSTRAINED if has_param else _LITERAL)
    if len(set(names)) != len(names):
        raise ValueError(f"a route parameter is named twice in {template!r}")
    return RouteTemplate(template, re.compile(regex, re.IGNORECASE), tuple(names), tuple(rank))


def split_prefix(path: str, prefix: str) -> str | None:
    """The part of a request path after the routePrefix, without slashes around; None if outside."""
    path = path.strip("/")
    prefix = prefix.strip("/")
    if not prefix:
        return path
    if path.lower() == prefix.lower():
        return ""
    if path.lower().startswith(prefix.lower() + "/"):
        return path[len(prefix) + 1 :].strip("/")
    return None
