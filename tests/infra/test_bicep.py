"""The Bicep templates: every file parses, checkov passes, and the deployment contract holds.

Checkov's built-in Bicep checks cannot see inside Azure Verified Modules (registry modules are
not downloaded), so infra/checkov adds checks on the module parameters; a test below proves each
of them fails on a regression. The other tests read the parsed templates (pycep-parser) and
check what the product and docs rely on: app setting names, Key Vault references, role
assignments, always-ready instances, alert queries, outputs without secrets, parameter files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from sync_core import telemetry
from tests.infra.conftest import INFRA, ROOT, bicep_files, parse_files, run_checkov

CUSTOM_CHECKS = {f"CKV2_CALSYNC_{n}" for n in range(1, 17)}

# README "Settings" and infra/README.md: what the function app must be given in Azure.
PRODUCT_SETTINGS = {
    "TENANT_ID",
    "CLIENT_ID",
    "CREDENTIAL_MODE",
    "MAILBOX_SCOPE",
    "MANAGED_IDENTITY_CLIENT_ID",
    "KEY_VAULT_URL",
    "ROTATION_ENABLED",
    "GRAPH_ENDPOINT",
    "AUTHORITY_HOST",
    "PUBLIC_BASE_URL",
    "BOOKING_WEBHOOK_SECRET",
    "PLATFORM_WEBHOOK_SECRET",
    "PLATFORM_WEBHOOK_URL",
    "SYNC_WINDOW_DAYS",
    "EVENT_CATEGORY",
    "SUBSCRIPTION_LIFETIME_MINUTES",
    "INVITE_GUESTS",
    "RETRY_ATTEMPTS",
    "RETRY_BASE_SECONDS",
    "RENEW_SCHEDULE",
    "SWEEP_SCHEDULE",
    "RECOVER_SCHEDULE",
    "CREDENTIAL_SCHEDULE",
}
HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
}

ROLE_IDS = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "keyVaultSecretsOfficer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "keyVaultCertificatesOfficer": "a4417e6f-fecd-4de8-b567-7b0420556985",
}


def tree(parsed: dict[str, Any], name: str) -> dict[str, Any]:
    return parsed[f"infra/{name}"]


def walk(node: Any) -> Any:
    """Every dict and string inside a parsed tree."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# ---- parsing and checkov ----------------------------------------------------------------


def test_every_bicep_file_parses(parsed: dict[str, Any]) -> None:
    names = {str(p.relative_to(ROOT)) for p in bicep_files()}
    assert len(names) >= 9, names
    assert set(parsed) == names
    errors = {name: t["error"] for name, t in parsed.items() if "error" in t}
    assert not errors, errors
    for name, t in parsed.items():
        assert t.get("resources") or t.get("modules"), f"{name} declares nothing"


def test_checkov_passes_with_no_failures(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = checkov_report.get("results", {}).get("failed_checks", [])
    assert summary["parsing_errors"] == 0, summary
    assert summary["failed"] == 0, [
        (f["check_id"], f["resource"], f["file_path"], f"{f['file_line_range']}") for f in failed
    ]
    passed_ids = {c["check_id"] for c in checkov_report["results"]["passed_checks"]}
    # every custom check ran against the modules (a check that matched nothing proves nothing)
    assert passed_ids >= CUSTOM_CHECKS, CUSTOM_CHECKS - passed_ids


def test_checkov_suppressions_are_documented(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"].get("skipped_checks", [])
    for check in skipped:
        assert (check.get("check_result", {}).get("suppress_comment") or "").strip(), (
            f"{check['check_id']} on {check['resource']} is skipped without a reason"
        )
    readme = (INFRA / "checkov" / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Suppressions", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"\bCKV2?_[A-Z]+_\d+\b", section))
    assert {c["check_id"] for c in skipped} == documented


def test_custom_checks_fail_on_regressions(tmp_path: Path) -> None:
    """Flip each setting a custom check guards, in a copy: checkov must report every check."""
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns("scripts", "checkov"))
    regressions = [
        ("app/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true"),
        ("app/storage.bicep", "allowBlobPublicAccess: false", "allowBlobPublicAccess: true"),
        ("app/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"),
        ("app/storage.bicep", "supportsHttpsTrafficOnly: true", "supportsHttpsTrafficOnly: false"),
        (
            "app/storage.bicep",
            "defaultToOAuthAuthentication: true",
            "defaultToOAuthAuthentication: false",
        ),
        (
            "app/storage.bicep",
            "allowCrossTenantReplication: false",
            "allowCrossTenantReplication: true",
        ),
        ("app/keyvault.bicep", "enableRbacAuthorization: true", "enableRbacAuthorization: false"),
        ("app/keyvault.bicep", "enablePurgeProtection: true", "enablePurgeProtection: false"),
        ("app/keyvault.bicep", "enableSoftDelete: true", "enableSoftDelete: false"),
        ("app/function.bicep", "httpsOnly: true", "httpsOnly: false"),
        ("app/function.bicep", "minTlsVersion: '1.2'", "minTlsVersion: '1.0'"),
        (
            "app/function.bicep",
            "name: 'scm'\n        allow: false",
            "name: 'scm'\n        allow: true",
        ),
        ("app/function.bicep", "systemAssigned: false", "systemAssigned: true"),
        ("app/function.bicep", "version: '3.11'", "version: '3.12'"),
        ("app/monitoring.bicep", "disableLocalAuth: true", "disableLocalAuth: false"),
        ("app/resources.bicep", "user-assigned-identity:0.4.1'", "user-assigned-identity:latest'"),
    ]
    for name, before, after in regressions:
        path = copy / name
        text = path.read_text(encoding="utf-8")
        assert before in text, f"{name} no longer contains {before!r}: update this test"
        path.write_text(text.replace(before, after, 1), encoding="utf-8")
    report = run_checkov(copy)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert failed == CUSTOM_CHECKS, (CUSTOM_CHECKS - failed, failed - CUSTOM_CHECKS)


# ---- the contract with the product ------------------------------------------------------


def test_app_settings_are_exactly_the_products(parsed: dict[str, Any]) -> None:
    resources = tree(parsed, "app/resources.bicep")["variables"]
    product = set(resources["baseSettings"]["value"])
    secret_mode = json.dumps(resources["secretSettings"]["value"])
    assert "CLIENT_SECRET" in secret_mode  # only in secret mode, see the next test
    assert product == PRODUCT_SETTINGS, product ^ PRODUCT_SETTINGS
    host = set(tree(parsed, "app/function.bicep")["variables"]["hostSettings"]["value"])
    assert host == HOST_SETTINGS
    everything = json.dumps(parsed)
    # Flex Consumption rejects these; a connection string would carry the account key
    for forbidden in (
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        '"AzureWebJobsStorage"',
    ):
        assert forbidden not in everything, forbidden
    assert resources["baseSettings"]["value"]["TENANT_ID"] == "tenantId"
    assert (
        tree(parsed, "main.bicep")["parameters"]["credentialMode"]["default"] == "managed_identity"
    )
    assert (
        tree(parsed, "app/function.bicep")["variables"]["hostSettings"]["value"][
            "AzureWebJobsStorage__credential"
        ]
        == "managedidentity"
    )


def test_telemetry_goes_out_as_opentelemetry_from_the_python_worker(
    parsed: dict[str, Any],
) -> None:
    # "Use OpenTelemetry with Azure Functions" (Python, Application Insights): host.json's
    # telemetryMode, the worker's switch, and the distro in requirements.txt
    host_json = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host_json["telemetryMode"] == "OpenTelemetry"
    host = tree(parsed, "app/function.bicep")["variables"]["hostSettings"]["value"]
    assert host["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert re.search(r"^azure-monitor-opentelemetry==", requirements, flags=re.M)
    # the worker leaves out the instrumentations sync_core/telemetry.py leaves out
    disabled = host["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"].split(",")
    assert disabled == list(telemetry.DISABLED_INSTRUMENTATIONS)


def test_secrets_are_key_vault_references(parsed: dict[str, Any]) -> None:
    variables = tree(parsed, "app/resources.bicep")["variables"]
    reference = variables["kvReference"]["value"]
    assert reference.startswith("@Microsoft.KeyVault(VaultName=${names.keyVault};SecretName=")
    settings = variables["baseSettings"]["value"]
    for name, secret in (
        ("BOOKING_WEBHOOK_SECRET", "bookingWebhook"),
        ("PLATFORM_WEBHOOK_SECRET", "platformWebhook"),
    ):
        params = settings[name]["function"]["parameters"]
        assert params["original_string"] == "kvReference", name
        assert secret in json.dumps(params["new_string"]), name
    secret_setting = json.dumps(variables["secretSettings"]["value"])
    assert "kvReference" in secret_setting and "graphClientSecret" in secret_setting
    # the client secret reaches the app only in secret mode and not when the app rotates it
    assert "'secret'" in secret_setting or '"secret"' in secret_setting
    assert "rotationEnabled" in secret_setting
    names = variables["secretNames"]["value"]
    assert names == {
        "bookingWebhook": "booking-webhook-secret",
        "platformWebhook": "platform-webhook-secret",
        "graphClientSecret": "graph-client-secret",
    }
    # the scripts store the secrets under the same names
    scripts = "".join(p.read_text() for p in (INFRA / "scripts").glob("*.sh"))
    for secret_name in names.values():
        assert secret_name in scripts, secret_name


def test_function_app_is_flex_python_with_always_ready_http(parsed: dict[str, Any]) -> None:
    function = tree(parsed, "app/function.bicep")
    always_ready = json.dumps(function["variables"]["alwaysReady"]["value"])
    assert '"name": "http"' in always_ready and "alwaysReadyHttpInstances" in always_ready
    site = function["modules"]["site"]
    assert site["detail"]["path"] == "avm/res/web/site"
    params = site["config"]["params"]
    config = params["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["scaleAndConcurrency"]["alwaysReady"] == "alwaysReady"
    storage = config["deployment"]["storage"]
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert params["keyVaultAccessIdentityResourceId"] == "identityResourceId"
    plan = function["modules"]["plan"]["config"]["params"]
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    # the always-ready default keeps one HTTP instance warm
    main = tree(parsed, "main.bicep")["parameters"]
    assert main["alwaysReadyHttpInstances"]["default"] == 1


def test_role_assignments_are_the_least_the_app_needs(parsed: dict[str, Any]) -> None:
    rbac = tree(parsed, "app/rbac.bicep")
    assert rbac["variables"]["roles"]["value"] == ROLE_IDS
    assignments = {
        name: r
        for name, r in rbac["resources"].items()
        if r["type"] == "Microsoft.Authorization/roleAssignments"
    }
    identity_roles = {
        "blobDataOwner": "storageAccount",
        "queueDataContributor": "storageAccount",
        "tableDataContributor": "storageAccount",
        "secretsOfficer": "keyVault",
        "metricsPublisher": "appInsights",
    }
    admin_roles = {"adminSecretsOfficer": "keyVault", "adminCertificatesOfficer": "keyVault"}
    assert set(assignments) == set(identity_roles) | set(admin_roles)
    for name, scope in {**identity_roles, **admin_roles}.items():
        config = assignments[name]["config"]
        body = config.get("config", config)  # conditional resources nest one level deeper
        assert body["scope"] == scope, name  # one resource, never the group or subscription
        principal = body["properties"]["principalId"]
        assert principal == ("adminPrincipalId" if name in admin_roles else "identityPrincipalId")
        if name in identity_roles:
            assert body["properties"]["principalType"] == "ServicePrincipal", name
        # guid(scope, principal, role): a second deployment finds the same assignment
        assert body["name"]["function"]["type"] == "guid", name


def test_alert_rules_match_the_products_signals(parsed: dict[str, Any]) -> None:
    variables = tree(parsed, "app/alerts.bicep")["variables"]
    queries = {
        name: json.dumps(variables[name]["value"])
        for name in ("credentialQuery", "mappingErrorQuery", "parkedQuery")
    }
    assert "credential_watch:" in queries["credentialQuery"]
    assert "credential.expiring" in queries["credentialQuery"]
    assert "SeverityLevel >= 2" in queries["credentialQuery"]
    assert "mapping.error" in queries["mappingErrorQuery"]
    assert "StorageQueueLogs" in queries["parkedQuery"] and "-poison" in queries["parkedQuery"]
    assert "PutMessage" in queries["parkedQuery"]
    rules = [r["name"] for r in variables["rules"]["value"]]
    assert rules == ["credential-expiring", "parked-work", "mapping-errors"]
    # the parked-work alert needs queue write logs in the workspace
    storage = tree(parsed, "app/storage.bicep")["resources"]["queueDiagnostics"]["config"]
    assert storage["properties"]["logs"] == [{"category": "StorageWrite", "enabled": True}]
    # new tables do not exist when the rule is created: validation is skipped
    rule = tree(parsed, "app/alerts.bicep")["modules"]["rule"]
    assert '"skipQueryValidation": true' in json.dumps(rule)


def test_outputs_hold_no_secrets() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in bicep_files())
    outputs = re.findall(r"^output (\w+) \w+ = (.*)$", text, flags=re.M)
    assert len(outputs) >= 13
    for name, value in outputs:
        assert not re.search(r"(?i)secret|password|connectionstring|instrumentationkey", name), name
        assert not re.search(
            r"(?i)listkeys|listsecrets|connectionstring|instrumentationkey", value
        ), name
    assert "listKeys(" not in text and "listSecrets(" not in text


# ---- entry points and parameter files ----------------------------------------------------


def shared_block(name: str) -> str:
    text = (INFRA / name).read_text(encoding="utf-8")
    return text.split("// BEGIN SHARED PARAMETERS", 1)[1].split("// END SHARED PARAMETERS", 1)[0]


def test_both_entry_points_take_and_pass_the_same_parameters(parsed: dict[str, Any]) -> None:
    assert shared_block("main.bicep") == shared_block("main-rg.bicep")
    resources_params = set(tree(parsed, "app/resources.bicep")["parameters"])
    for entry, scope in (("main.bicep", "subscription"), ("main-rg.bicep", "resourceGroup")):
        t = tree(parsed, entry)
        assert t["globals"]["scope"]["value"] == scope
        passed = set(t["modules"]["resources"]["config"]["params"])
        assert passed == resources_params, (entry, passed ^ resources_params)
    extra = set(tree(parsed, "main.bicep")["parameters"]) - set(
        tree(parsed, "main-rg.bicep")["parameters"]
    )
    assert extra == {"resourceGroupName"}


@pytest.mark.parametrize("entry", ["main", "main-rg"])
def test_parameter_files_match_their_templates(parsed: dict[str, Any], entry: str) -> None:
    declared = tree(parsed, f"{entry}.bicep")["parameters"]
    values = json.loads((INFRA / f"{entry}.parameters.json").read_text())["parameters"]
    assert set(values) <= set(declared), set(values) - set(declared)
    required = {name for name, p in declared.items() if "default" not in p or p["default"] is None}
    assert required <= set(values), f"azd would have no value for {required - set(values)}"
    for name, value in values.items():
        assert re.fullmatch(r"\$\{[A-Z_]+(=[^}]*)?\}", value["value"]), (name, value)


def test_azure_yaml_points_at_the_templates_and_the_app() -> None:
    config = parse_files([ROOT / "azure.yaml"])["azure.yaml"]
    assert "error" not in config, config
    assert config["infra"]["provider"] == "bicep"
    assert (ROOT / config["infra"]["path"] / f"{config['infra']['module']}.bicep").is_file()
    api = config["services"]["api"]
    assert (api["host"], api["language"], api["project"]) == ("function", "python", ".")
    assert (ROOT / "function_app.py").is_file() and (ROOT / "host.json").is_file()
    hook = config["hooks"]["postprovision"]["posix"]["run"]
    script = re.search(r"infra/scripts/[\w-]+\.sh", hook)
    assert script and (ROOT / script.group(0)).is_file(), hook
    # the hook's variable is an output of both entry points
    for entry in ("main.bicep", "main-rg.bicep"):
        assert "output AZURE_KEY_VAULT_NAME " in (INFRA / entry).read_text()


def test_docs_name_every_module_version_used(parsed: dict[str, Any]) -> None:
    used = {
        f"{m['detail']['path']}:{m['detail']['tag']}"
        for t in parsed.values()
        for m in t.get("modules", {}).values()
        if m["type"] == "bicep_registry_alias"
    }
    assert len(used) == 9, used
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    missing = {u for u in used if f"`br/public:{u}`" not in deploy}
    assert not missing, f"docs/deploy.md does not list {missing}"
