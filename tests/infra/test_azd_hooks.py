"""One `azd up`: the hooks in azure.yaml, the access keys and the not-answering alert.

azure.yaml is parsed with PyYAML and the Bicep files with pycep-parser, both in the infra tools'
environment. PowerShell is not installed here: mailbox-scope.ps1 is checked by reading it
(parameters, the same Exchange calls as the bash script), not by running it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.conftest import INFRA, ROOT, SCRIPTS, parse_files


@pytest.fixture(scope="module")
def hooks() -> dict[str, Any]:
    config = parse_files([ROOT / "azure.yaml"])["azure.yaml"]
    assert "error" not in config, config
    hooks: dict[str, Any] = config["hooks"]
    return hooks


def script_of(run: str, suffix: str) -> list[str]:
    names = re.findall(rf"infra/scripts/([\w-]+\.{suffix})\b", run)
    for name in names:
        assert (SCRIPTS / name).is_file(), name
    return names


def test_every_hook_has_a_posix_and_a_windows_variant(hooks: dict[str, Any]) -> None:
    assert set(hooks) == {"postprovision", "postdeploy", "postup"}
    for event, hook in hooks.items():
        assert set(hook) == {"posix", "windows"}, event
        assert hook["posix"]["shell"] == "sh" and hook["windows"]["shell"] == "pwsh", event
        assert hook["posix"]["continueOnError"] is False, event
        assert hook["windows"]["continueOnError"] is False, event
        # the Windows variant runs the same steps
        assert script_of(hook["windows"]["run"], "sh") == [
            s for s in script_of(hook["posix"]["run"], "sh") if s != "mailbox-scope.sh"
        ], event


def test_hooks_run_in_the_order_a_first_deployment_needs(hooks: dict[str, Any]) -> None:
    provision = hooks["postprovision"]
    assert script_of(provision["posix"]["run"], "sh") == ["webhook-secrets.sh", "mailbox-scope.sh"]
    assert "mailbox-scope.sh --if-group-set" in provision["posix"]["run"]
    assert "&&" in provision["posix"]["run"]  # no scoping after a failed secrets step
    assert script_of(provision["windows"]["run"], "ps1") == ["mailbox-scope.ps1"]
    assert "-IfGroupSet" in provision["windows"]["run"]
    assert "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }" in provision["windows"]["run"]
    assert provision["posix"]["interactive"] is True  # Exchange signs the admin in
    # the keys need the deployed functions; the handover comes last, when everything exists
    assert script_of(hooks["postdeploy"]["posix"]["run"], "sh") == ["function-keys.sh"]
    assert script_of(hooks["postup"]["posix"]["run"], "sh") == ["handover.sh"]
    for event in ("postdeploy", "postup"):
        assert hooks[event]["windows"]["run"].endswith("; exit $LASTEXITCODE"), event


def test_the_hooks_variables_are_outputs_of_both_entry_points() -> None:
    used = set()
    for name in ("function-keys.sh", "handover.sh", "mailbox-scope.sh", "webhook-secrets.sh"):
        text = (SCRIPTS / name).read_text()
        own = set(re.findall(r"^\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))
        used |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+):-", text)) - own
    # set by the admin (azd env set), or read with a default
    optional = {
        "MAILBOX_GROUP",
        "MAILBOX_SCOPE",
        "MAILBOX_SCOPE_ADMIN",
        "BOOKING_WEBHOOK_SECRET",
        "PLATFORM_WEBHOOK_SECRET",
        "PLATFORM_WEBHOOK_URL",
        "FUNCTION_POLL_SECONDS",
        "KV_RETRIES",
        "KV_RETRY_SECONDS",
        "TMPDIR",
    }
    for entry in ("main.bicep", "main-rg.bicep"):
        outputs = set(re.findall(r"^output (\w+) ", (INFRA / entry).read_text(), flags=re.M))
        assert used - optional <= outputs, (entry, used - optional - outputs)


def test_the_platform_key_is_a_key_of_the_booking_function_only() -> None:
    """A function key opens only its own function; a host key opens every function-level one
    (learn.microsoft.com/azure/azure-functions/function-keys-how-to, "Access key types")."""
    keys = parse_files([INFRA / "app" / "function-keys.bicep"])["infra/app/function-keys.bicep"]
    assert "error" not in keys, keys
    resources = keys["resources"]
    booking = resources["bookingKey"]
    assert booking["type"] == "Microsoft.Web/sites/functions/keys"
    assert booking["config"]["parent"] == "bookingFunction"
    assert booking["config"]["name"] == "bookingKeyName"
    assert booking["config"]["properties"]["value"] == "bookingKeyValue"
    function = resources["bookingFunction"]
    assert function["type"] == "Microsoft.Web/sites/functions" and function["existing"]
    assert function["config"]["name"] == "bookingFunctionName"
    params = keys["parameters"]
    assert params["bookingFunctionName"]["default"] == "booking_events"
    assert params["bookingKeyName"]["default"] == "platform"
    assert params["adminKeyName"]["default"] == "admin"
    for secret in ("bookingKeyValue", "adminKeyValue"):
        assert {"type": "secure"} in params[secret]["decorators"], secret
    admin = resources["adminKey"]
    assert admin["type"] == "Microsoft.Web/sites/host/functionKeys"
    assert "adminKeyName" in json.dumps(admin["config"]["name"])
    # the names agree with function.bicep's outputs (main.bicep's BOOKING_* / ADMIN_KEY_NAME)
    function_bicep = parse_files([INFRA / "app" / "function.bicep"])["infra/app/function.bicep"]
    assert function_bicep["variables"]["accessKeys"]["value"] == {
        "bookingFunction": "booking_events",
        "bookingKey": "platform",
        "adminKey": "admin",
    }
    # and with the app: booking_events is the function of the booking route, keyed per function
    app = (ROOT / "function_app.py").read_text()
    route = re.search(
        r'@app\.function_name\("booking_events"\).*?\n@app\.route\(route="api/bookings/events"'
        r"[^)]*\)\ndef booking_events",
        app,
    )
    assert route, "function_app.py no longer names the booking route's function booking_events"


def test_the_main_outputs_name_the_booking_url_and_keys() -> None:
    for entry in ("main.bicep", "main-rg.bicep"):
        text = (INFRA / entry).read_text()
        assert (
            "output BOOKING_URL string = '${resources.outputs.publicBaseUrl}/api/bookings/events'"
            in text
        )
        for name in ("BOOKING_FUNCTION_NAME", "BOOKING_KEY_NAME", "ADMIN_KEY_NAME"):
            assert f"output {name} string = resources.outputs." in text, (entry, name)


def test_an_alert_fires_when_the_app_stops_answering() -> None:
    alerts = parse_files([INFRA / "app" / "alerts.bicep"])["infra/app/alerts.bicep"]
    assert "error" not in alerts, alerts
    test = alerts["resources"]["healthTest"]
    assert test["type"] == "Microsoft.Insights/webtests"
    config = test["config"]
    assert config["kind"] == "standard" and config["properties"]["Kind"] == "standard"
    assert config["properties"]["Request"]["RequestUrl"] == "${publicBaseUrl}/api/health"
    assert config["properties"]["ValidationRules"]["ExpectedHttpStatusCode"] == 200
    assert "hidden-link:${appInsightsResourceId}" in json.dumps(config["tags"])
    locations = alerts["variables"]["healthTestLocations"]["value"]
    alert = alerts["resources"]["notAnswering"]
    assert alert["type"] == "Microsoft.Insights/metricAlerts"
    criteria = alert["config"]["properties"]["criteria"]
    assert criteria["'odata.type'"] == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria"
    assert criteria["componentId"] == "appInsightsResourceId"
    assert 1 < criteria["failedLocationCount"] < len(locations)
    assert "actionGroupIds" in json.dumps(alert["config"]["properties"]["actions"])
    # the health route answers without a key
    assert re.search(
        r'route="api/health", methods=\["GET"\], auth_level=func\.AuthLevel\.ANONYMOUS',
        (ROOT / "function_app.py").read_text(),
    )
    resources = (INFRA / "app" / "resources.bicep").read_text()
    assert "publicBaseUrl: productSettings.PUBLIC_BASE_URL" in resources


def test_the_powershell_mailbox_scope_mirrors_the_bash_one() -> None:
    ps1 = (SCRIPTS / "mailbox-scope.ps1").read_text()
    exchange = ps1.split("# ---- Exchange side ----", 1)[1]
    sh = (SCRIPTS / "mailbox-scope.sh").read_text()
    for parameter in (
        "ClientId",
        "Group",
        "Method",
        "Name",
        "SpObjectId",
        "Test",
        "ExpectDenied",
        "Admin",
        "IfGroupSet",
        "DryRun",
    ):
        assert re.search(rf"\] \${parameter}\b", ps1), parameter
    for default in ("$env:GRAPH_CLIENT_ID", "$env:MAILBOX_GROUP", "$env:MAILBOX_SCOPE"):
        assert default in ps1, default
    cmdlets = set(re.findall(r"\b(?:New|Set|Get|Remove|Test|Connect|Disconnect)-[A-Z]\w+", sh))
    assert (
        cmdlets - set(re.findall(r"\b(?:New|Set|Get|Remove|Test|Connect|Disconnect)-[A-Z]\w+", ps1))
        == set()
    )
    assert "skipped, MAILBOX_GROUP is not set" in ps1 and "skipped, MAILBOX_GROUP is not set" in sh
    assert "$ErrorActionPreference = 'Stop'" in ps1 and "Set-StrictMode -Version Latest" in ps1
    # every create is behind a look-up (idempotent), as in the bash script
    for look, create in (
        ("Get-ServicePrincipal", "New-ServicePrincipal"),
        ("Get-ManagementScope", "New-ManagementScope"),
        ("Get-ManagementRoleAssignment", "New-ManagementRoleAssignment"),
        ("Get-ApplicationAccessPolicy", "New-ApplicationAccessPolicy"),
    ):
        assert exchange.index(look) < exchange.index(create), create
    # brackets balance outside strings and comments: a cheap stand-in for a parser
    code = re.sub(r"<#.*?#>", "", ps1, flags=re.S)
    code = re.sub(r"(?m)^\s*#.*$", "", code)
    code = re.sub(r"'[^'\n]*'", "''", code)
    code = re.sub(r'"(?:`.|[^"`\n])*"', '""', code)
    for opening, closing in ("{}", "()", "[]"):
        assert code.count(opening) == code.count(closing), opening + closing
