"""The Entra app registration in Bicep (app/entra.bicep, app/entra-credential.bicep).

Read from the parsed templates (pycep-parser 0.7.1, which parses `extension`): the application,
its service principal, one app role assignment per Graph permission (admin consent), the managed
identity's federated credential, every name per azd environment, the wiring in both entry
points, and that the permission list is app-registration.sh's. Also how checkov sees these
files: as they are they do not parse for it, so it reads copies without the `extension` line
(conftest.checkov_copy), and every .bicep file is among them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import (
    EXTENSION_LINE,
    INFRA,
    SCRIPTS,
    bicep_files,
    checkov_copy,
    run_checkov,
)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
EXTENSION_FILES = {"app/entra.bicep", "app/entra-credential.bicep"}


def tree(parsed: dict[str, Any], name: str) -> dict[str, Any]:
    return parsed[f"infra/{name}"]


def accessor(node: Any) -> str:
    """`a.b.c` for a parsed property access, the plain string for anything else."""
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        return f"{accessor(operands['operand_1'])}.{accessor(operands['operand_2'])}"
    assert isinstance(node, str), node
    return node


def conditional(node: Any) -> dict[str, Any]:
    assert node["operator"]["type"] == "conditional", node
    operands: dict[str, Any] = node["operator"]["operands"]
    return operands


def script_role_ids() -> dict[str, str]:
    """The Graph app role ids app-registration.sh grants, by its variable names."""
    text = (SCRIPTS / "app-registration.sh").read_text(encoding="utf-8")
    return dict(re.findall(r"^ROLE_([A-Z_]+)=([0-9a-f-]{36})$", text, flags=re.M))


# ---- the extension --------------------------------------------------------------------------


def test_graph_files_declare_the_extension_bicepconfig_pins(parsed: dict[str, Any]) -> None:
    declaring = {
        str(p.relative_to(INFRA))
        for p in bicep_files()
        if EXTENSION_LINE.search(p.read_text(encoding="utf-8"))
    }
    assert declaring == EXTENSION_FILES
    graph_types = {
        name
        for name, t in parsed.items()
        for r in t.get("resources", {}).values()
        if r["type"].startswith("Microsoft.Graph/")
    }
    assert graph_types == {f"infra/{n}" for n in EXTENSION_FILES}
    for name in EXTENSION_FILES:
        assert tree(parsed, name)["extensions"] == {"microsoftGraphV1": {}}
    # bicepconfig.json is JSON with comments
    text = (INFRA / "bicepconfig.json").read_text(encoding="utf-8")
    config = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))
    assert re.fullmatch(
        r"br:mcr\.microsoft\.com/bicep/extensions/microsoftgraph/v1\.0:\d+\.\d+\.\d+",
        config["extensions"]["microsoftGraphV1"],
    ), config


# ---- app/entra.bicep: application, service principal, permissions ---------------------------


def test_application_and_service_principal_are_per_environment(parsed: dict[str, Any]) -> None:
    entra = tree(parsed, "app/entra.bicep")
    resources = entra["resources"]
    names = entra["variables"]["names"]["value"]
    # uniqueName is the key a redeploy finds the registration by: environment + the same hash as
    # the Azure resources' names (app/resources.bicep), so no two environments share one
    assert names["application"] == "calendar-sync-${environmentName}-${token}"
    assert names["displayName"] == "calendar-sync-${environmentName}"
    assert entra["variables"]["token"] == tree(parsed, "app/resources.bicep")["variables"]["token"]

    app = resources["application"]
    assert (app["type"], app["api_version"], app["existing"]) == (
        "Microsoft.Graph/applications",
        "v1.0",
        False,
    )
    config = app["config"]
    assert accessor(config["uniqueName"]) == "names.application"
    assert accessor(config["displayName"]) == "names.displayName"
    assert config["signInAudience"] == "AzureADMyOrg"  # single tenant, as the script
    [graph_access] = config["requiredResourceAccess"]
    assert graph_access["resourceAppId"] == "graphAppId"
    loop = graph_access["resourceAccess"]
    assert loop["loop_type"]["detail"] == {"item_name": "role", "array_name": "wantedRoles"}
    assert loop["config"] == {"id": "role", "type": "Role"}  # application permissions only

    sp = resources["servicePrincipal"]
    assert (sp["type"], sp["api_version"], sp["existing"]) == (
        "Microsoft.Graph/servicePrincipals",
        "v1.0",
        False,
    )
    assert accessor(sp["config"]["appId"]) == "application.appId"

    graph = resources["graph"]
    assert graph["type"] == "Microsoft.Graph/servicePrincipals" and graph["existing"] is True
    assert graph["config"] == {"appId": "graphAppId"}
    assert entra["variables"]["graphAppId"]["value"] == GRAPH_APP_ID


def test_each_permission_is_an_app_role_assignment_on_graph(parsed: dict[str, Any]) -> None:
    """Admin consent: for every wanted role, the app's service principal is assigned it on
    Microsoft Graph's service principal."""
    grants = tree(parsed, "app/entra.bicep")["resources"]["graphPermissions"]
    assert (grants["type"], grants["api_version"]) == ("Microsoft.Graph/appRoleAssignedTo", "v1.0")
    loop = grants["config"]
    assert loop["loop_type"]["detail"] == {"item_name": "role", "array_name": "wantedRoles"}
    assert loop["condition"] is None
    body = loop["config"]
    assert accessor(body["principalId"]) == "servicePrincipal.id"
    assert accessor(body["resourceId"]) == "graph.id"
    assert body["appRoleId"] == "role"


def test_permissions_are_app_registrations_list(parsed: dict[str, Any]) -> None:
    """The same role ids as infra/scripts/app-registration.sh, chosen the same way: Place.Read.All
    and User.Read.All always, Calendars.ReadWrite unless Exchange RBAC scopes it (default rbac,
    as the script's --mailbox-scope), Application.ReadWrite.OwnedBy only with rotation."""
    variables = tree(parsed, "app/entra.bicep")["variables"]
    ids = variables["graphRoles"]["value"]
    script = script_role_ids()
    assert ids == {
        "calendarsReadWrite": script["CALENDARS_READWRITE"],
        "placeReadAll": script["PLACE_READ_ALL"],
        "userReadAll": script["USER_READ_ALL"],
        "applicationReadWriteOwnedBy": script["APPLICATION_READWRITE_OWNEDBY"],
    }
    assert [accessor(v) for v in variables["alwaysRoles"]["value"]] == [
        "graphRoles.placeReadAll",
        "graphRoles.userReadAll",
    ]
    calendars = conditional(variables["calendarRoles"]["value"])
    assert calendars["condition"]["operator"] == {
        "type": "equals",
        "operands": {"operand_1": "mailboxScope", "operand_2": "rbac"},
    }
    assert calendars["true_value"] == []
    assert [accessor(v) for v in calendars["false_value"]] == ["graphRoles.calendarsReadWrite"]
    rotation = conditional(variables["rotationRoles"]["value"])
    assert rotation["condition"] == "enableSecretRotation" and rotation["false_value"] == []
    assert [accessor(v) for v in rotation["true_value"]] == [
        "graphRoles.applicationReadWriteOwnedBy"
    ]
    assert variables["wantedRoles"]["value"]["function"] == {
        "type": "concat",
        "parameters": {"arg_1": "alwaysRoles", "arg_2": "calendarRoles", "arg_3": "rotationRoles"},
    }
    # the default matches the script's
    script_text = (SCRIPTS / "app-registration.sh").read_text(encoding="utf-8")
    assert re.search(r"^MAILBOX_SCOPE=rbac$", script_text, flags=re.M)
    params = tree(parsed, "app/entra.bicep")["parameters"]["mailboxScope"]
    allowed = next(d["argument"] for d in params["decorators"] if d["type"] == "allowed")
    assert allowed == ["rbac", "policy", "tenant"]
    for entry in ("main.bicep", "main-rg.bicep"):
        assert tree(parsed, entry)["parameters"]["mailboxScope"]["default"] == "rbac"


# ---- app/entra-credential.bicep: the federated credential -----------------------------------


def test_federated_credential_trusts_the_user_assigned_identity(parsed: dict[str, Any]) -> None:
    credential = tree(parsed, "app/entra-credential.bicep")
    variables = {k: v["value"] for k, v in credential["variables"].items()}
    # the name carries the environment: a second environment adds its own, never replaces this
    assert variables["credentialName"] == "calendar-sync-${environmentName}-managed-identity"
    # a managed identity's tokens: the tenant's v2.0 issuer, the exchange audience
    assert variables["issuer"] == "${authorityHost}/${tenant().tenantId}/v2.0"
    assert variables["audience"] == "api://AzureADTokenExchange"

    app = credential["resources"]["application"]
    assert (app["type"], app["existing"]) == ("Microsoft.Graph/applications", False)
    assert app["config"]["uniqueName"] == "applicationUniqueName"
    owners = app["config"]["owners"]
    assert owners["relationshipSemantics"] == "append"  # never removes an owner
    rotation = conditional(owners["relationships"])
    assert rotation == {
        "condition": "enableSecretRotation",
        "true_value": ["servicePrincipalId"],
        "false_value": [],
    }

    fic = credential["resources"]["application__managedIdentity"]
    assert fic["type"].startswith("Microsoft.Graph/applications/federatedIdentityCredentials")
    assert fic["api_version"] == "v1.0"
    config = fic["config"]
    assert config["name"] == "${application.uniqueName}/${credentialName}"
    assert (config["issuer"], config["subject"], config["audiences"]) == (
        "issuer",
        "identityPrincipalId",
        ["audience"],
    )
    # credential.sh writes the same credential by hand (sovereign clouds, own registrations),
    # under the same name per azd environment
    script = (SCRIPTS / "credential.sh").read_text(encoding="utf-8")
    assert 'local name="calendar-sync-$ENV_NAME-managed-identity"' in script
    assert 'ENV_NAME="${AZURE_ENV_NAME:-}"' in script
    assert 'issuer="$AUTHORITY_HOST/$TENANT_ID/v2.0"' in script
    assert "AUDIENCE=api://AzureADTokenExchange" in script


# ---- wiring in both entry points --------------------------------------------------------------


@pytest.mark.parametrize("entry", ["main.bicep", "main-rg.bicep"])
def test_entry_points_create_the_registration_unless_one_is_given(
    parsed: dict[str, Any], entry: str
) -> None:
    t = tree(parsed, entry)
    params = t["parameters"]
    assert params["graphClientId"]["default"] == ""  # no longer required
    variables = {k: v["value"] for k, v in t["variables"].items()}
    assert variables["createRegistration"] == {
        "function": {"type": "empty", "parameters": {"item_to_test": "graphClientId"}}
    }
    client_id = conditional(variables["clientId"])
    assert client_id["condition"] == "createRegistration"
    assert accessor(client_id["true_value"]) == "entra.outputs.appId"
    assert client_id["false_value"] == "graphClientId"
    # rotation permissions only when the app really rotates (secret mode), as app/resources.bicep
    assert variables["registrationRotatesSecret"]["operator"] == {
        "type": "and",
        "operands": {
            "operand_1": {
                "operator": {
                    "type": "equals",
                    "operands": {"operand_1": "credentialMode", "operand_2": "secret"},
                }
            },
            "operand_2": "enableSecretRotation",
        },
    }

    modules = t["modules"]
    entra, credential = modules["entra"], modules["entraCredential"]
    for module, path in ((entra, "app/entra.bicep"), (credential, "app/entra-credential.bicep")):
        assert module["detail"]["path"] == path
        assert module["config"]["condition"] == "createRegistration"
    assert entra["config"]["config"]["params"] == {
        "environmentName": "environmentName",
        "mailboxScope": "mailboxScope",
        "enableSecretRotation": "registrationRotatesSecret",
    }
    passed = credential["config"]["config"]["params"]
    # the subject is the function app's user-assigned identity, created by app/resources.bicep
    assert accessor(passed["identityPrincipalId"]) == "resources.outputs.identityPrincipalId"
    assert passed["authorityHost"] == "authorityHost"
    assert passed["environmentName"] == "environmentName"
    assert accessor(passed["applicationUniqueName"]) == "entra.outputs.applicationUniqueName"
    assert accessor(passed["servicePrincipalId"]) == "entra.outputs.servicePrincipalId"
    # the app signs in with the registration's id, and azd hands it to the scripts
    assert modules["resources"]["config"]["params"]["graphClientId"] == "clientId"
    assert t["outputs"]["GRAPH_CLIENT_ID"]["value"] == "clientId"


def test_the_credentials_subject_is_the_apps_user_assigned_identity(
    parsed: dict[str, Any],
) -> None:
    resources = tree(parsed, "app/resources.bicep")
    output = resources["outputs"]["identityPrincipalId"]["value"]
    assert accessor(output) == "identity.outputs.principalId"
    identity = resources["modules"]["identity"]
    assert identity["detail"]["path"] == "avm/res/managed-identity/user-assigned-identity"
    # that identity is the function app's only one (CKV2_CALSYNC_13: no system-assigned)
    assert "identityResourceId" in json.dumps(tree(parsed, "app/function.bicep")["parameters"])


@pytest.mark.parametrize("entry", ["main", "main-rg"])
def test_parameter_files_leave_the_registration_optional(entry: str) -> None:
    values = json.loads((INFRA / f"{entry}.parameters.json").read_text())["parameters"]
    assert values["graphClientId"]["value"] == "${GRAPH_CLIENT_ID=}"
    assert values["mailboxScope"]["value"] == "${MAILBOX_SCOPE=rbac}"


# ---- checkov and the extension ---------------------------------------------------------------


def test_checkov_cannot_parse_extension_files_as_they_are(tmp_path: Path) -> None:
    """Why checkov reads copies: as they are, checkov reports these files as parsing errors and
    runs no rule on them (it does not skip them silently either)."""
    for name in EXTENSION_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(INFRA / name, tmp_path / name)
    report = run_checkov(tmp_path, as_is=True)
    errors = {str(Path(p).relative_to(tmp_path)) for p in report["results"]["parsing_errors"]}
    assert errors == EXTENSION_FILES
    assert report["summary"]["parsing_errors"] == len(EXTENSION_FILES)


def test_checkov_reads_every_bicep_file(checkov_report: dict[str, Any]) -> None:
    """Every .bicep file under infra/ went to checkov and parsed: its rules ran on every
    resource of every file, the Graph ones included."""
    expected = sorted(str(p.relative_to(INFRA)) for p in bicep_files())
    assert checkov_report["checked_files"] == expected
    assert set(expected) >= EXTENSION_FILES
    assert checkov_report["summary"]["parsing_errors"] == 0
    assert checkov_report["results"].get("parsing_errors", []) == []


def test_checkov_copies_differ_only_by_the_extension_line(tmp_path: Path) -> None:
    for copy in checkov_copy(INFRA, tmp_path):
        original = (INFRA / copy.relative_to(tmp_path)).read_text(encoding="utf-8").splitlines()
        copied = copy.read_text(encoding="utf-8").splitlines()
        assert len(original) == len(copied), copy  # line numbers of findings stay right
        changed = [(a, b) for a, b in zip(original, copied, strict=True) if a != b]
        assert all(EXTENSION_LINE.fullmatch(a) and b == "" for a, b in changed), changed
        assert bool(changed) == (str(copy.relative_to(tmp_path)) in EXTENSION_FILES)
