"""infra/scripts: shellcheck-clean, and each script's calls, in dry runs and against a fake az.

Dry runs happen with `az` and `pwsh` replaced by stand-ins that fail and record any call, so a
dry run that tried to run either tool fails the test. Real runs use a scripted fake `az` to
check the decisions the scripts make: prerequisites, idempotency, what gets removed, and that
secrets travel in files, never on a command line or in the output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import HERE, SCRIPTS, infra_tool

SCRIPT_NAMES = [
    "app-registration.sh",
    "credential.sh",
    "function-keys.sh",
    "handover.sh",
    "mailbox-scope.sh",
    "webhook-secrets.sh",
]
APP = "11111111-1111-1111-1111-111111111111"
TENANT = "33333333-3333-3333-3333-333333333333"
MI = "22222222-2222-2222-2222-222222222222"
SP = "44444444-4444-4444-4444-444444444444"
ROLE = {
    "Calendars.ReadWrite": "ef54d2bf-783f-4e0f-bca1-3210c0444d99",
    "Place.Read.All": "913b9306-0ce1-42b8-9137-6a7df690a760",
    "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
    "Application.ReadWrite.OwnedBy": "18a4783c-866b-4cc7-a460-3d5e5662c884",
}
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]]

    def commands(self) -> list[str]:
        """The `+ ...` lines the script printed: the calls it makes or would make."""
        return [line[2:] for line in self.stdout.splitlines() if line.startswith("+ ")]

    def called(self, pattern: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if re.search(pattern, " ".join([c["tool"], *c["argv"]]))]


Runner = Callable[..., Result]


@pytest.fixture
def run_script(tmp_path: Path) -> Runner:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("az", "pwsh"):
        shim = bin_dir / tool
        shim.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(HERE)!r})\n"
            f"import fake_cli\nsys.exit(fake_cli.main({tool!r}))\n"
        )
        shim.chmod(0o755)
    log = tmp_path / "calls.jsonl"

    def run(
        script: str,
        *args: str,
        scenario: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        forbid: bool = False,
    ) -> Result:
        log.write_text("")
        scenario_file = tmp_path / "scenario.json"
        scenario_file.write_text(json.dumps(scenario or []))
        environment = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
            "FAKE_CLI_LOG": str(log),
            "FAKE_CLI_SCENARIO": str(scenario_file),
            "FAKE_CLI_FORBID": "1" if forbid else "0",
            "KV_RETRY_SECONDS": "0",
            **(env or {}),
        }
        out = subprocess.run(
            ["bash", str(SCRIPTS / script), *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
            check=False,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines() if line]
        return Result(out.returncode, out.stdout, out.stderr, calls)

    return run


def dry(run_script: Runner, script: str, *args: str, env: dict[str, str] | None = None) -> Result:
    result = run_script(script, *args, "--dry-run", env=env, forbid=True)
    assert result.rc == 0, result.stderr
    assert result.calls == [], f"a dry run called {result.calls}"
    assert result.commands(), "a dry run printed no calls"
    return result


def granted_roles(json_text: str) -> set[str]:
    [graph] = json.loads(json_text)
    assert graph["resourceAppId"] == "00000003-0000-0000-c000-000000000000"
    assert {a["type"] for a in graph["resourceAccess"]} == {"Role"}
    return {a["id"] for a in graph["resourceAccess"]}


def printed_permissions(result: Result) -> set[str]:
    block = result.stdout.split("# required resource access", 1)[1].splitlines()[1]
    return granted_roles(block.lstrip("#").strip())


# ---- static checks ----------------------------------------------------------------------


def test_scripts_pass_shellcheck() -> None:
    scripts = sorted(SCRIPTS.glob("*.sh"))
    assert len(scripts) == len(SCRIPT_NAMES) + 1  # + lib.sh
    out = subprocess.run(
        [
            str(infra_tool("shellcheck")),
            "--external-sources",
            "--severity=style",
            *map(str, scripts),
        ],
        capture_output=True,
        text=True,
        cwd=SCRIPTS,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_scripts_are_strict_executable_and_documented(run_script: Runner, name: str) -> None:
    path = SCRIPTS / name
    assert os.access(path, os.X_OK), f"{name} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    result = run_script(name, "--help", forbid=True)
    assert result.rc == 0 and "--dry-run" in result.stdout and result.calls == []
    bad = run_script(name, "--no-such-option", forbid=True)
    assert bad.rc != 0 and "unknown option: --no-such-option" in bad.stderr


# ---- dry runs: the calls each script would make -----------------------------------------


def test_app_registration_dry_run_default_scopes_calendars_out(run_script: Runner) -> None:
    result = dry(run_script, "app-registration.sh")
    commands = result.commands()
    assert (
        "az ad app create --display-name calendar-sync --sign-in-audience AzureADMyOrg"
        " --query appId -o tsv" in commands
    )
    assert any(
        re.fullmatch(r"az ad app update --id '<app-id>' --required-resource-accesses @\S+", c)
        for c in commands
    )
    assert "az ad sp create --id '<app-id>' --query id -o tsv" in commands
    assert "az ad app permission admin-consent --id '<app-id>'" in commands
    # rbac scoping: Calendars.ReadWrite comes from Exchange, not from a tenant-wide Entra grant
    assert printed_permissions(result) == {ROLE["Place.Read.All"], ROLE["User.Read.All"]}
    assert not any("owner add" in c for c in commands)
    assert "consent URL" in result.stdout and "/adminconsent?client_id=<app-id>" in result.stdout


def test_app_registration_dry_run_policy_and_rotation(run_script: Runner) -> None:
    result = dry(
        run_script, "app-registration.sh", "--mailbox-scope", "policy", "--enable-rotation"
    )
    assert printed_permissions(result) == set(ROLE.values())
    assert (
        "az ad app owner add --id '<app-id>' --owner-object-id '<service-principal-object-id>'"
        in result.commands()
    )


def test_credential_dry_runs(run_script: Runner) -> None:
    env = {
        "AZURE_ENV_NAME": "prod",
        "GRAPH_CLIENT_ID": APP,
        "MANAGED_IDENTITY_PRINCIPAL_ID": MI,
        "AZURE_KEY_VAULT_NAME": "kv-test",
    }
    mi = dry(
        run_script, "credential.sh", "--mode", "managed-identity", "--tenant-id", TENANT, env=env
    )
    assert any(
        re.fullmatch(rf"az ad app federated-credential create --id {APP} --parameters @\S+", c)
        for c in mi.commands()
    )
    body = json.loads(
        mi.stdout.split("# federated identity credential", 1)[1].splitlines()[1].lstrip("#").strip()
    )
    assert body["issuer"] == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert body["subject"] == MI and body["audiences"] == ["api://AzureADTokenExchange"]
    # the name infra/app/entra-credential.bicep gives it, per azd environment
    assert body["name"] == "calendar-sync-prod-managed-identity"
    staging = dry(
        run_script,
        "credential.sh",
        "--mode",
        "managed-identity",
        "--env",
        "staging",
        "--tenant-id",
        TENANT,
        env=env,
    )
    assert '"name": "calendar-sync-staging-managed-identity"' in staging.stdout

    cert = dry(run_script, "credential.sh", "--mode", "certificate", env=env)
    assert any(
        c.startswith(
            "az keyvault certificate create --vault-name kv-test"
            " --name graph-client-certificate --policy @"
        )
        for c in cert.commands()
    )
    assert (
        f"az ad app credential reset --id {APP} --keyvault kv-test"
        " --cert graph-client-certificate --append" in cert.commands()
    )

    secret = dry(run_script, "credential.sh", "--mode", "secret", "--months", "6", env=env)
    reset, store = [c for c in secret.commands() if "credential reset" in c or "secret set" in c]
    assert re.fullmatch(
        rf"az ad app credential reset --id {APP} --append --display-name 'calendar-sync [\d-]+'"
        r" --end-date \S+Z --query password -o tsv",
        reset,
    )
    assert re.fullmatch(
        r"az keyvault secret set --vault-name kv-test --name graph-client-secret --file \S+"
        r" --encoding utf-8 --expires \S+Z .*",
        store,
    )


def test_credential_requires_its_inputs(run_script: Runner) -> None:
    missing = run_script("credential.sh", "--mode", "secret", "--client-id", APP, forbid=True)
    assert missing.rc != 0 and "--vault is required" in missing.stderr
    no_mode = run_script("credential.sh", "--client-id", APP, forbid=True)
    assert no_mode.rc != 0 and "--mode is required" in no_mode.stderr
    mi = ("--mode", "managed-identity", "--client-id", APP, "--identity-principal-id", MI)
    no_env = run_script("credential.sh", *mi, forbid=True)
    assert no_env.rc != 0 and "--env is required" in no_env.stderr
    assert "AZURE_ENV_NAME" in no_env.stderr
    bad_env = run_script("credential.sh", *mi, "--env", "prod'x", forbid=True)
    assert bad_env.rc != 0 and "--env must be" in bad_env.stderr


def test_webhook_secrets_dry_run(run_script: Runner) -> None:
    result = dry(run_script, "webhook-secrets.sh", "--vault", "kv-test")
    stores = [c for c in result.commands() if c.startswith("az keyvault secret set")]
    assert [re.search(r"--name (\S+)", c).group(1) for c in stores] == [  # type: ignore[union-attr]
        "booking-webhook-secret",
        "platform-webhook-secret",
    ]
    assert all("--file " in c for c in stores)
    assert not re.search(r"whsec_[A-Za-z0-9+/]", result.stdout + result.stderr)


@pytest.mark.parametrize("method", ["rbac", "policy"])
def test_mailbox_scope_dry_run(run_script: Runner, method: str) -> None:
    result = dry(
        run_script,
        "mailbox-scope.sh",
        "--method",
        method,
        "--client-id",
        APP,
        "--sp-object-id",
        SP,
        "--group",
        "rooms@contoso.example",
        "--test",
        "room@contoso.example",
        "--expect-denied",
        "ceo@contoso.example",
    )
    out = result.stdout
    assert (
        "Connect-ExchangeOnline" in out
        and "Get-DistributionGroup -Identity 'rooms@contoso.example'" in out
    )
    if method == "rbac":
        assert (
            f"New-ServicePrincipal -AppId '{APP}' -ObjectId '{SP}' -DisplayName 'calendar-sync'"
            in out
        )
        assert (
            "New-ManagementScope -Name 'calendar-sync' -RecipientRestrictionFilter $filter" in out
        )
        assert "MemberOfGroup -eq" in out
        assert (
            f"New-ManagementRoleAssignment -Name 'calendar-sync-calendars' -App '{APP}' "
            "-Role 'Application Calendars.ReadWrite' -CustomResourceScope 'calendar-sync'"
        ) in out
        assert (
            f"Test-ServicePrincipalAuthorization -Identity '{APP}' -Resource 'room@contoso.example'"
            in out
        )
        assert "if ($inScope -ne $False)" in out  # the out-of-scope mailbox must be denied
        # the Entra side: no tenant-wide Calendars.ReadWrite grant
        assert any("appRoleAssignments" in c for c in result.commands())
    else:
        assert (
            f"New-ApplicationAccessPolicy -AppId '{APP}'"
            " -PolicyScopeGroupId 'rooms@contoso.example' -AccessRight RestrictAccess"
        ) in out
        assert f"Test-ApplicationAccessPolicy -Identity 'ceo@contoso.example' -AppId '{APP}'" in out
    assert re.search(r"^\+ pwsh -NoLogo -NoProfile -File \S+$", out, flags=re.M)


# ---- real runs against a fake az ----------------------------------------------------------


def test_a_missing_login_stops_with_the_command_to_run(run_script: Runner) -> None:
    scenario = [{"match": r"^az account show", "rc": 1}]
    result = run_script("app-registration.sh", scenario=scenario)
    assert result.rc == 1
    assert "not signed in to the Azure CLI: run 'az login" in result.stderr
    assert len(result.calls) == 1  # nothing after the check


def test_the_wrong_tenant_stops(run_script: Runner) -> None:
    scenario = [{"match": r"^az account show", "stdout": "99999999-9999-9999-9999-999999999999\n"}]
    result = run_script("app-registration.sh", "--tenant-id", TENANT, scenario=scenario)
    assert result.rc == 1 and f"run 'az login --tenant {TENANT}'" in result.stderr


def existing_app_scenario(roles: str, grants: str, owners: str = "") -> list[dict[str, Any]]:
    return [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"^az ad app list", "stdout": f"{APP}\n"},
        {"match": r"^az ad sp show", "stdout": f"{SP}\n"},
        {"match": r"^az ad app owner list", "stdout": owners},
        {"match": r"transitiveMemberOf", "stdout": roles},
        {"match": r"appRoleAssignments' ", "stdout": grants},
        {"match": r"appRoleAssignments ", "stdout": grants},
    ]


def test_app_registration_rerun_converges(run_script: Runner) -> None:
    """An existing app is reused; a tenant-wide Calendars grant left from policy mode goes."""
    grants = f"grant-cal\t{ROLE['Calendars.ReadWrite']}\ngrant-place\t{ROLE['Place.Read.All']}\n"
    scenario = existing_app_scenario(roles=f"{GLOBAL_ADMIN}\n", grants=grants, owners=f"{SP}\n")
    result = run_script("app-registration.sh", scenario=scenario)
    assert result.rc == 0, result.stderr
    assert not result.called(r"ad app create|ad sp create")
    [update] = result.called(r"ad app update")
    assert granted_roles(update["files"]["--required-resource-accesses"]) == {
        ROLE["Place.Read.All"],
        ROLE["User.Read.All"],
    }
    deletes = result.called(r"--method delete")
    assert [d["argv"][-1] for d in deletes] == [
        f"https://graph.microsoft.com/v1.0/servicePrincipals/{SP}/appRoleAssignments/grant-cal"
    ]
    # rotation is off: the service principal no longer owns its registration
    assert result.called(rf"ad app owner remove --id {APP} --owner-object-id {SP}")
    assert result.called(rf"ad app permission admin-consent --id {APP}")
    assert f"CLIENT_ID (application id): {APP}" in result.stdout


def test_app_registration_without_admin_role_prints_the_consent_url(run_script: Runner) -> None:
    scenario = existing_app_scenario(roles="", grants="")
    result = run_script("app-registration.sh", scenario=scenario)
    assert result.rc == 0, result.stderr
    assert not result.called(r"admin-consent|--method delete")
    assert (
        f"consent URL: https://login.microsoftonline.com/{TENANT}/adminconsent?client_id={APP}"
        in result.stdout
    )


def test_app_registration_refuses_an_ambiguous_name(run_script: Runner) -> None:
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"^az ad app list", "stdout": f"{APP}\n{SP}\n"},
    ]
    result = run_script("app-registration.sh", scenario=scenario)
    assert (
        result.rc == 1 and "several app registrations are called 'calendar-sync'" in result.stderr
    )
    assert not result.called(r"ad app (create|update)")


def test_a_failing_call_names_itself_and_the_role_it_needs(run_script: Runner) -> None:
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"^az ad app create", "rc": 1},
    ]
    result = run_script("app-registration.sh", scenario=scenario)
    assert result.rc == 1
    assert "this call failed: az ad app create --display-name calendar-sync" in result.stderr
    assert (
        "hint: creating an app registration needs the Application Developer role" in result.stderr
    )


def test_federated_credential_is_not_duplicated(run_script: Runner) -> None:
    issuer = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"federated-credential list", "stdout": f"{MI}\t{issuer}\n"},
    ]
    args = ("--mode", "managed-identity", "--env", "prod", "--client-id", APP)
    same = run_script("credential.sh", *args, "--identity-principal-id", MI, scenario=scenario)
    assert same.rc == 0, same.stderr
    [lookup] = same.called(r"federated-credential list")
    assert (
        "[?name=='calendar-sync-prod-managed-identity'].[subject, issuer] | [0]" in lookup["argv"]
    )
    assert not same.called(r"federated-credential (create|update)")
    other = run_script(
        "credential.sh",
        *args,
        "--identity-principal-id",
        "55555555-5555-5555-5555-555555555555",
        scenario=scenario,
    )
    [update] = other.called(r"federated-credential update")
    assert "calendar-sync-prod-managed-identity" in update["argv"]
    assert (
        json.loads(update["files"]["--parameters"])["subject"]
        == "55555555-5555-5555-5555-555555555555"
    )


def test_federated_credential_under_another_name_is_kept(run_script: Runner) -> None:
    # Entra allows one credential per issuer and subject: one an earlier version of the script
    # made under its fixed name already trusts the identity, so none is added.
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"federated-credential list .*\[\?name==", "stdout": ""},
        {"match": r"federated-credential list", "stdout": "calendar-sync-managed-identity\n"},
    ]
    args = ("--mode", "managed-identity", "--env", "prod", "--client-id", APP)
    kept = run_script("credential.sh", *args, "--identity-principal-id", MI, scenario=scenario)
    assert kept.rc == 0, kept.stderr
    assert "named calendar-sync-managed-identity; keeping it" in kept.stderr
    assert not kept.called(r"federated-credential (create|update)")
    [_, by_subject] = kept.called(r"federated-credential list")
    issuer = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert f"[?issuer=='{issuer}' && subject=='{MI}'].name | [0]" in by_subject["argv"]


def test_client_secret_goes_from_entra_to_key_vault_without_showing(run_script: Runner) -> None:
    password = "s3cr3t~value.from.entra"
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"keyvault secret show", "rc": 3, "stderr": "(SecretNotFound)"},
        {"match": r"ad app credential reset", "stdout": f"{password}\n"},
    ]
    result = run_script(
        "credential.sh",
        "--mode",
        "secret",
        "--client-id",
        APP,
        "--vault",
        "kv-test",
        scenario=scenario,
    )
    assert result.rc == 0, result.stderr
    [store] = result.called(r"keyvault secret set")
    assert store["files"]["--file"] == password
    assert "--expires" in store["argv"]
    everything = result.stdout + result.stderr + json.dumps([c["argv"] for c in result.calls])
    assert password not in everything


def test_a_valid_secret_is_kept(run_script: Runner) -> None:
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"keyvault secret show", "stdout": "2099-01-01T00:00:00+00:00\n"},
    ]
    args = ("--mode", "secret", "--client-id", APP, "--vault", "kv-test")
    kept = run_script("credential.sh", *args, scenario=scenario)
    assert kept.rc == 0 and not kept.called(r"credential reset|secret set")
    rotated = run_script("credential.sh", *args, "--rotate", scenario=scenario)
    assert rotated.called(r"credential reset") and rotated.called(r"secret set")


def test_webhook_secrets_are_generated_once(run_script: Runner) -> None:
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {
            "match": r"secret show .*booking-webhook-secret",
            "stdout": "https://kv-test.vault.azure.net/secrets/booking-webhook-secret/1\n",
        },
        {"match": r"secret show .*platform-webhook-secret", "rc": 3, "stderr": "(SecretNotFound)"},
    ]
    result = run_script("webhook-secrets.sh", "--vault", "kv-test", scenario=scenario)
    assert result.rc == 0, result.stderr
    [store] = result.called(r"keyvault secret set")
    assert "platform-webhook-secret" in store["argv"]
    value = store["files"]["--file"]
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", value), value  # 32 random bytes
    assert value not in result.stdout + result.stderr


def test_webhook_secret_from_the_platform_is_checked(run_script: Runner) -> None:
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"secret show", "rc": 3, "stderr": "(SecretNotFound)"},
    ]
    result = run_script(
        "webhook-secrets.sh",
        "--vault",
        "kv-test",
        scenario=scenario,
        env={"BOOKING_WEBHOOK_SECRET": "not-a-webhook-secret"},
    )
    assert (
        result.rc == 1
        and "BOOKING_WEBHOOK_SECRET must be a Standard Webhooks secret" in result.stderr
    )
    assert not result.called(r"secret set")


def test_mailbox_scope_refuses_rbac_over_a_tenant_wide_grant(run_script: Runner) -> None:
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"^az ad sp show", "stdout": f"{SP}\n"},
        {"match": r"appRoleAssignments", "stdout": "grant-cal\n"},
    ]
    result = run_script(
        "mailbox-scope.sh",
        "--client-id",
        APP,
        "--group",
        "rooms@contoso.example",
        scenario=scenario,
    )
    assert result.rc == 1 and "holds Calendars.ReadWrite tenant-wide" in result.stderr
    assert not result.called(r"^pwsh")


def test_mailbox_scope_runs_the_powershell_it_printed(run_script: Runner) -> None:
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"^az ad sp show", "stdout": f"{SP}\n"},
    ]
    result = run_script(
        "mailbox-scope.sh",
        "--client-id",
        APP,
        "--group",
        "rooms@contoso.example",
        scenario=scenario,
    )
    assert result.rc == 0, result.stderr
    [pwsh] = result.called(r"^pwsh")
    script = pwsh["files"]["-File"]
    assert f"New-ServicePrincipal -AppId '{APP}' -ObjectId '{SP}'" in script
    assert "Application Calendars.ReadWrite" in script


def test_mailbox_scope_rejects_quotes_in_arguments(run_script: Runner) -> None:
    result = run_script(
        "mailbox-scope.sh",
        "--client-id",
        APP,
        "--group",
        "x'; Remove-Mailbox *",
        "--dry-run",
        forbid=True,
    )
    assert result.rc == 1 and "quotes, backticks and $ are not allowed" in result.stderr


def test_key_vault_access_still_propagating_is_retried_not_mistaken_for_absent(
    run_script: Runner,
) -> None:
    """Right after provisioning the admin's new vault role may not apply yet: a 403 on reading
    the booking secret must not look like "no secret" (that would replace the platform's)."""
    forbidden = "(Forbidden) Caller is not authorized to perform action on resource."
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"secret show .*booking", "rc": 1, "stderr": forbidden, "times": 2},
        {"match": r"secret show .*booking", "stdout": "https://kv/secrets/booking/1\n"},
        {"match": r"secret show .*platform", "rc": 1, "stderr": "(SecretNotFound) A secret ..."},
        {"match": r"secret set", "rc": 1, "stderr": forbidden, "times": 1},
    ]
    env = {"KV_RETRY_SECONDS": "0"}
    result = run_script("webhook-secrets.sh", "--vault", "kv-test", scenario=scenario, env=env)
    assert result.rc == 0, result.stderr
    assert len(result.called(r"secret show .*booking")) == 3
    sets = result.called(r"secret set")
    assert len(sets) == 2  # the first write was refused and retried
    assert all("platform-webhook-secret" in s["argv"] for s in sets)
    assert "a new role assignment can take minutes to apply" in result.stderr


def test_key_vault_refusal_that_persists_stops_with_the_role_needed(run_script: Runner) -> None:
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"secret show", "rc": 1, "stderr": "(Forbidden) not authorized"},
    ]
    env = {"KV_RETRY_SECONDS": "0", "KV_RETRIES": "3"}
    result = run_script("webhook-secrets.sh", "--vault", "kv-test", scenario=scenario, env=env)
    assert result.rc == 1
    assert "(Forbidden) not authorized" in result.stderr
    assert "hint: writing secrets needs Key Vault Secrets Officer on kv-test" in result.stderr
    assert len(result.called(r"secret show")) == 3 and not result.called(r"secret set")


def test_app_registration_name_cannot_break_the_filter(run_script: Runner) -> None:
    result = run_script("app-registration.sh", "--name", "x' or 1 eq 1", "--dry-run", forbid=True)
    assert result.rc == 1 and "--name may contain" in result.stderr


# ---- the azd hooks: mailbox scope, function keys, handover --------------------------------

BOOKING_SECRET = "whsec_" + "b" * 43 + "="
PLATFORM_SECRET = "whsec_" + "p" * 43 + "="
FUNCTION_KEY = "k" * 43
HOOK_ENV = {
    "AZURE_RESOURCE_GROUP": "rg-test",
    "AZURE_FUNCTION_APP_NAME": "func-test",
    "AZURE_KEY_VAULT_NAME": "kv-test",
    "PUBLIC_BASE_URL": "https://func-test.azurewebsites.net",
    "PLATFORM_WEBHOOK_URL": "https://platform.example/webhooks/calendar-sync",
}


def test_mailbox_scope_hook_skips_without_a_group(run_script: Runner) -> None:
    result = run_script(
        "mailbox-scope.sh", "--if-group-set", env={"GRAPH_CLIENT_ID": APP}, forbid=True
    )
    assert result.rc == 0, result.stderr
    assert result.calls == [] and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "skipped, MAILBOX_GROUP is not set" in line and "azd env set MAILBOX_GROUP" in line


def test_mailbox_scope_hook_skips_a_tenant_wide_deployment(run_script: Runner) -> None:
    env = {
        "GRAPH_CLIENT_ID": APP,
        "MAILBOX_GROUP": "rooms@contoso.example",
        "MAILBOX_SCOPE": "tenant",
    }
    result = run_script("mailbox-scope.sh", "--if-group-set", env=env, forbid=True)
    assert result.rc == 0 and result.calls == [], result.stderr
    assert "skipped, MAILBOX_SCOPE is tenant" in result.stderr


def test_mailbox_scope_without_a_group_and_without_the_hook_flag_fails(run_script: Runner) -> None:
    result = run_script("mailbox-scope.sh", "--client-id", APP, forbid=True)
    assert result.rc == 1 and "--group is required" in result.stderr


def test_mailbox_scope_hook_scopes_the_group_from_the_environment(run_script: Runner) -> None:
    env = {"GRAPH_CLIENT_ID": APP, "MAILBOX_GROUP": "rooms@contoso.example"}
    preview = dry(run_script, "mailbox-scope.sh", "--if-group-set", env=env)
    assert "Get-DistributionGroup -Identity 'rooms@contoso.example'" in preview.stdout
    assert f"-App '{APP}' -Role 'Application Calendars.ReadWrite'" in preview.stdout
    scenario = [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"^az ad sp show", "stdout": f"{SP}\n"},
    ]
    result = run_script("mailbox-scope.sh", "--if-group-set", scenario=scenario, env=env)
    assert result.rc == 0, result.stderr
    [pwsh] = result.called(r"^pwsh")
    script = pwsh["files"]["-File"]
    # idempotent: every create is behind a look-up of what exists
    for look, create in (
        ("Get-ServicePrincipal", "New-ServicePrincipal"),
        ("Get-ManagementScope", "New-ManagementScope"),
        ("Get-ManagementRoleAssignment", "New-ManagementRoleAssignment"),
    ):
        assert script.index(look) < script.index(create), create
    policy = run_script(
        "mailbox-scope.sh",
        "--if-group-set",
        "--dry-run",
        env={**env, "MAILBOX_SCOPE": "policy"},
        forbid=True,
    )
    assert "New-ApplicationAccessPolicy" in policy.stdout


def hook_scenario() -> list[dict[str, Any]]:
    return [
        {"match": r"^az account show", "stdout": f"{TENANT}\n"},
        {"match": r"functionapp function show", "stdout": "booking_events\n"},
        {"match": r"functionapp function keys list", "stdout": f"{FUNCTION_KEY}\n"},
        {
            "match": r"secret show .*booking-webhook-secret --query value",
            "stdout": f"{BOOKING_SECRET}\n",
        },
        {
            "match": r"secret show .*platform-webhook-secret --query value",
            "stdout": f"{PLATFORM_SECRET}\n",
        },
        {
            "match": r"secret show .*booking-function-key --query value",
            "stdout": f"{FUNCTION_KEY}\n",
        },
        {"match": r"secret show .*admin-function-key --query value", "stdout": "a" * 43 + "\n"},
        {
            "match": r"secret show .*-function-key --query id",
            "stdout": "https://kv-test/secrets/x/1\n",
        },
    ]


def test_handover_prints_url_key_and_both_secrets(run_script: Runner) -> None:
    result = run_script("handover.sh", scenario=hook_scenario(), env=HOOK_ENV)
    assert result.rc == 0, result.stderr
    out = result.stdout
    assert "https://func-test.azurewebsites.net/api/bookings/events" in out
    assert FUNCTION_KEY in out and "x-functions-key" in out
    assert BOOKING_SECRET in out and PLATFORM_SECRET in out
    assert "secure channel" in out
    assert "https://platform.example/webhooks/calendar-sync" in out
    [keys] = result.called(r"functionapp function keys list")
    assert keys["argv"][keys["argv"].index("--function-name") + 1] == "booking_events"
    assert keys["argv"][keys["argv"].index("--query") + 1] == "platform"
    # read only: nothing is created or changed
    assert not result.called(r" (set|create|update|delete) ")


def test_handover_json_is_one_object_on_stdout(run_script: Runner) -> None:
    result = run_script("handover.sh", "--json", scenario=hook_scenario(), env=HOOK_ENV)
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout) == {
        "booking_url": "https://func-test.azurewebsites.net/api/bookings/events",
        "function_key_header": "x-functions-key",
        "function_key": FUNCTION_KEY,
        "booking_webhook_secret": BOOKING_SECRET,
        "platform_webhook_secret": PLATFORM_SECRET,
        "platform_webhook_url": "https://platform.example/webhooks/calendar-sync",
    }
    preview = run_script("handover.sh", "--json", "--dry-run", env=HOOK_ENV, forbid=True)
    assert preview.rc == 0 and preview.calls == [], preview.stderr
    assert json.loads(preview.stdout)["function_key"] == "<function key>"
    assert "+ az functionapp function keys list" in preview.stderr


def test_handover_without_the_key_names_the_step_that_makes_it(run_script: Runner) -> None:
    scenario = [s for s in hook_scenario() if "keys list" not in s["match"]]
    result = run_script("handover.sh", scenario=scenario, env=HOOK_ENV)
    assert result.rc == 1 and "run infra/scripts/function-keys.sh" in result.stderr
    assert BOOKING_SECRET not in result.stdout + result.stderr


def test_function_keys_dry_run(run_script: Runner) -> None:
    result = dry(run_script, "function-keys.sh", env=HOOK_ENV)
    commands = result.commands()
    assert (
        "az functionapp function show -g rg-test -n func-test --function-name booking_events"
        " --query name -o tsv" in commands
    )
    assert re.fullmatch(
        r"az deployment group create -g rg-test -n calendar-sync-function-keys"
        r" -f \S+/infra/app/function-keys\.bicep --parameters @\S+ --output none",
        commands[-1],
    )


def test_function_keys_are_generated_once_and_travel_in_a_file(run_script: Runner) -> None:
    scenario = [
        {
            "match": r"secret show .*booking-function-key --query id",
            "rc": 3,
            "stderr": "(SecretNotFound)",
            "times": 1,
        },
        *hook_scenario(),
    ]
    result = run_script("function-keys.sh", scenario=scenario, env=HOOK_ENV)
    assert result.rc == 0, result.stderr
    [stored] = result.called(r"keyvault secret set")  # the admin key existed: kept
    assert "booking-function-key" in stored["argv"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", stored["files"]["--file"])
    [deployment] = result.called(r"deployment group create")
    parameters = json.loads(deployment["files"]["--parameters"])["parameters"]
    assert parameters["bookingFunctionName"]["value"] == "booking_events"
    assert parameters["bookingKeyName"]["value"] == "platform"
    assert parameters["adminKeyName"]["value"] == "admin"
    assert parameters["bookingKeyValue"]["value"] == FUNCTION_KEY
    everything = result.stdout + result.stderr + json.dumps([c["argv"] for c in result.calls])
    assert FUNCTION_KEY not in everything and stored["files"]["--file"] not in everything


def test_function_keys_wait_for_the_deployed_code(run_script: Runner) -> None:
    scenario = [
        {"match": r"functionapp function show", "rc": 3, "stderr": "(NotFound)", "times": 2},
        *hook_scenario(),
    ]
    env = {**HOOK_ENV, "FUNCTION_POLL_SECONDS": "0"}
    result = run_script("function-keys.sh", scenario=scenario, env=env)
    assert result.rc == 0, result.stderr
    assert len(result.called(r"functionapp function show")) == 3
    assert result.called(r"deployment group create")
    gone = run_script(
        "function-keys.sh",
        "--wait",
        "0",
        scenario=[{"match": r"functionapp function show", "rc": 3}, *hook_scenario()],
        env=env,
    )
    assert gone.rc == 1 and "deploy the code first (azd deploy)" in gone.stderr
    assert not gone.called(r"deployment group create|secret set")
