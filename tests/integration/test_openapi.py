"""docs/openapi.yaml describes exactly the HTTP routes ``function_app.app`` registers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

SPEC = ROOT / "docs" / "openapi.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}

# Run in a fresh interpreter: get_functions() may be called only once per app object.
LIST_ROUTES = """
import json
import function_app
routes = []
for function in function_app.app.get_functions():
    trigger = function.get_trigger()
    if trigger is None or trigger.get_binding_name() != "httpTrigger":
        continue
    data = trigger.get_dict_repr()
    for method in data.get("methods") or []:
        routes.append([str(method).lower(), "/" + data["route"], str(data.get("authLevel"))])
print(json.dumps(routes))
"""


def load_spec(path: Path = SPEC) -> dict[str, Any]:
    """The document is JSON-compatible YAML (YAML 1.2 is a superset of JSON): drop the comment
    lines YAML allows at the top, then parse as JSON. No YAML library is needed."""
    lines = path.read_text().splitlines()
    body = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    document: dict[str, Any] = json.loads(body)
    return document


def registered_routes(env: dict[str, str]) -> list[tuple[str, str, str]]:
    done = subprocess.run(
        [sys.executable, "-c", LIST_ROUTES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [tuple(r) for r in json.loads(done.stdout.strip().splitlines()[-1])]


def subprocess_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobs")} | settings_env


def test_every_registered_route_is_documented_and_vice_versa(settings_env: dict[str, str]) -> None:
    routes = registered_routes(subprocess_env(settings_env))
    assert len(routes) >= 14  # health, 3 inbound, 4 mappings, resync, rooms, status, ui, ...
    registered = {(method, path) for method, path, _ in routes}
    spec = load_spec()
    assert spec["openapi"].startswith("3.1")
    documented = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }
    assert registered - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - registered == set(), "documented routes the app does not register"


def test_security_matches_auth_levels(settings_env: dict[str, str]) -> None:
    """Anonymous routes have ``security: []``; every other route needs the function key."""
    spec = load_spec()
    for method, path, auth in registered_routes(subprocess_env(settings_env)):
        operation = spec["paths"][path][method]
        names = {name for requirement in operation["security"] for name in requirement}
        if auth.upper().endswith("ANONYMOUS"):
            assert operation["security"] == [], (method, path)
        else:
            assert names == {"functionKeyHeader", "functionKeyQuery"}, (method, path, auth)


def test_refs_resolve_and_errors_are_problem_json() -> None:
    spec = load_spec()

    def resolve(ref: str) -> Any:
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert refs
    for ref in refs:
        assert resolve(ref) is not None, ref
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, given in operation["responses"].items():
                response = resolve(given["$ref"]) if "$ref" in given else given
                if status.startswith("4"):
                    assert list(response["content"]) == ["application/problem+json"], (
                        path,
                        method,
                        status,
                    )
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    booking = spec["paths"]["/api/bookings/events"]["post"]
    headers = {resolve(p["$ref"])["name"] for p in booking["parameters"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    for route in ("/api/graph/notifications", "/api/graph/lifecycle"):
        operation = spec["paths"][route]["post"]
        names = {resolve(p["$ref"])["name"] for p in operation["parameters"]}
        assert names == {"validationToken"}
