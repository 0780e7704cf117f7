#!/usr/bin/env bash
# Limits which mailboxes the app can reach in Exchange Online to the members of one
# mail-enabled security group (docs/spec.md §5, docs/permissions.md), and tests it.
#
#   --method rbac (default)  Exchange Online RBAC for Applications: a management scope on the
#                            group and the role "Application Calendars.ReadWrite" assigned to
#                            the app's service principal with that scope. Requires that the app
#                            has NO tenant-wide Calendars.ReadWrite grant in Entra ID
#                            (app-registration.sh --mailbox-scope rbac): Exchange RBAC adds to
#                            Entra grants, it cannot narrow them.
#   --method policy          the older ApplicationAccessPolicy: the Entra grant stays tenant-wide
#                            (app-registration.sh --mailbox-scope policy) and Exchange restricts
#                            it to the group.
#
# The Exchange cmdlets are PowerShell (module ExchangeOnlineManagement), so this script writes
# the PowerShell, prints it, and runs it with pwsh; --dry-run prints it only. Every step looks
# before it creates or changes, so running it again converges instead of duplicating.
# Exchange caches these grants: a change can take 30 minutes to 2 hours to apply everywhere.
#
# azd runs it after every provisioning (azure.yaml, postprovision hook) with --if-group-set: it
# scopes the app to the group named by MAILBOX_GROUP in the azd environment, and when that is
# not set it says so in one line and changes nothing. infra/scripts/mailbox-scope.ps1 does the
# same in PowerShell (the hook on Windows).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'USAGE'
usage: infra/scripts/mailbox-scope.sh --client-id ID --group ADDRESS [options]
       infra/scripts/mailbox-scope.sh --client-id ID --test MAILBOX [--expect-denied MAILBOX]

  --client-id ID           the app registration (default: $GRAPH_CLIENT_ID)
  --group ADDRESS          mail-enabled security group whose direct members the app may reach
                           (nested groups are not expanded; default: $MAILBOX_GROUP)
  --if-group-set           no group given: skip with one line instead of failing (the azd hook)
  --method rbac|policy     see above (default: $MAILBOX_SCOPE, the deployment's mailboxScope, else rbac)
  --name NAME              name of the management scope / role assignment (default calendar-sync)
  --sp-object-id ID        object id of the app's service principal (default: looked up with az)
  --test MAILBOX           after the set-up (or alone): check the app may reach MAILBOX
  --expect-denied MAILBOX  check the app may NOT reach MAILBOX (one outside the group)
  --admin UPN              Exchange admin to sign in as (Connect-ExchangeOnline -UserPrincipalName;
                           default: $MAILBOX_SCOPE_ADMIN)
  --dry-run                print the PowerShell (and az calls) instead of running them
  -h, --help               this text

Needs pwsh with the ExchangeOnlineManagement module, and an Exchange admin (Organization
Management role group, or the Exchange Administrator role).
USAGE
}

CLIENT_ID="${GRAPH_CLIENT_ID:-}"
GROUP="${MAILBOX_GROUP:-}"
METHOD="${MAILBOX_SCOPE:-rbac}"
NAME=calendar-sync
SP_OBJECT_ID=''
ADMIN="${MAILBOX_SCOPE_ADMIN:-}"
IF_GROUP_SET=0
TESTS=()
DENIED=()
while [ $# -gt 0 ]; do
  case "$1" in
    --client-id) CLIENT_ID="${2:?--client-id needs a value}"; shift 2 ;;
    --group) GROUP="${2:?--group needs a value}"; shift 2 ;;
    --method) METHOD="${2:?--method needs a value}"; shift 2 ;;
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --sp-object-id) SP_OBJECT_ID="${2:?--sp-object-id needs a value}"; shift 2 ;;
    --test) TESTS+=("${2:?--test needs a mailbox}"); shift 2 ;;
    --expect-denied) DENIED+=("${2:?--expect-denied needs a mailbox}"); shift 2 ;;
    --admin) ADMIN="${2:?--admin needs a value}"; shift 2 ;;
    --if-group-set) IF_GROUP_SET=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
if [ "$IF_GROUP_SET" = 1 ] && [ "$METHOD" = tenant ]; then
  log "mailbox scope: skipped, MAILBOX_SCOPE is tenant (the app may reach every mailbox by design)"
  exit 0
fi
if [ "$IF_GROUP_SET" = 1 ] && [ -z "$GROUP" ]; then
  log "mailbox scope: skipped, MAILBOX_GROUP is not set (to scope the app to a group: azd env set MAILBOX_GROUP <group address>, then azd provision)"
  exit 0
fi
[ -n "$CLIENT_ID" ] || die "--client-id is required"
case "$METHOD" in rbac | policy) ;; *) die "--method must be rbac or policy" ;; esac
if [ -z "$GROUP" ] && [ ${#TESTS[@]} -eq 0 ] && [ ${#DENIED[@]} -eq 0 ]; then
  die "--group is required (or --test / --expect-denied to test an existing scope)"
fi
for value in "$CLIENT_ID" "$GROUP" "$NAME" "$SP_OBJECT_ID" "$ADMIN" "${TESTS[@]}" "${DENIED[@]}"; do
  case "$value" in *"'"* | *'`'* | *'$'*) die "quotes, backticks and \$ are not allowed in arguments: $value" ;; esac
done
if [ "$DRY_RUN" = 1 ]; then log "dry run: printing the calls and the PowerShell; nothing is changed"; fi

ROLE_CALENDARS_READWRITE=ef54d2bf-783f-4e0f-bca1-3210c0444d99

# Filled in by private_temp_file / capture (indirect assignment).
script='' tenant_wide=''

# ---- Entra side (az): the service principal, and no tenant-wide grant in rbac mode ----
if [ -n "$GROUP" ] && { [ "$METHOD" = rbac ] || [ -z "$SP_OBJECT_ID" ]; }; then
  require_az_login
  if [ -z "$SP_OBJECT_ID" ]; then
    capture SP_OBJECT_ID '<service-principal-object-id>' az ad sp show --id "$CLIENT_ID" --query id -o tsv
    [ -n "$SP_OBJECT_ID" ] || die "no service principal for $CLIENT_ID: run app-registration.sh first"
  fi
  if [ "$METHOD" = rbac ]; then
    capture tenant_wide '' az rest --method get --url "https://graph.microsoft.com/v1.0/servicePrincipals/$SP_OBJECT_ID/appRoleAssignments" --query "value[?appRoleId=='$ROLE_CALENDARS_READWRITE'].id" -o tsv
    if [ -n "$tenant_wide" ]; then
      die "the app holds Calendars.ReadWrite tenant-wide in Entra ID, so a scope would not narrow anything: run app-registration.sh --mailbox-scope rbac (it removes that grant), or use --method policy"
    fi
  fi
fi

# ---- Exchange side (PowerShell) ----
CONNECT_AS=''
if [ -n "$ADMIN" ]; then CONNECT_AS=" -UserPrincipalName '$ADMIN'"; fi
private_temp_file script
{
  cat <<PS
# Generated by infra/scripts/mailbox-scope.sh: scope app $CLIENT_ID ($METHOD).
\$ErrorActionPreference = 'Stop'
if (-not (Get-Module -ListAvailable -Name ExchangeOnlineManagement)) {
    throw "PowerShell module ExchangeOnlineManagement is missing: Install-Module ExchangeOnlineManagement -Scope CurrentUser"
}
Import-Module ExchangeOnlineManagement
Connect-ExchangeOnline -ShowBanner:\$false$CONNECT_AS
try {
    # Fails here, with Exchange's own message, unless the signed-in admin may manage roles.
    Get-ManagementRole -Identity 'Application Calendars.ReadWrite' | Out-Null
} catch {
    throw "cannot read Exchange roles: sign in as a member of Organization Management (or an Exchange Administrator). \$_"
}
PS
  if [ -n "$GROUP" ]; then
    cat <<PS
\$group = Get-DistributionGroup -Identity '$GROUP'
if (\$group.RecipientTypeDetails -ne 'MailUniversalSecurityGroup') {
    throw "'$GROUP' is a \$(\$group.RecipientTypeDetails); it must be a mail-enabled security group"
}
PS
    if [ "$METHOD" = rbac ]; then
      cat <<PS
# Exchange's pointer to the Entra service principal (the enterprise application).
if (-not (Get-ServicePrincipal -Identity '$CLIENT_ID' -ErrorAction SilentlyContinue)) {
    New-ServicePrincipal -AppId '$CLIENT_ID' -ObjectId '$SP_OBJECT_ID' -DisplayName '$NAME'
}
# The mailboxes: direct members of the group.
\$filter = "MemberOfGroup -eq '\$(\$group.DistinguishedName)'"
\$scope = Get-ManagementScope -Identity '$NAME' -ErrorAction SilentlyContinue
if (-not \$scope) {
    New-ManagementScope -Name '$NAME' -RecipientRestrictionFilter \$filter
} elseif (\$scope.RecipientFilter -ne \$filter) {
    # Exchange may store the filter normalised; setting the same filter again is harmless.
    Set-ManagementScope -Identity '$NAME' -RecipientRestrictionFilter \$filter
}
# The permission, limited to the scope.
if (-not (Get-ManagementRoleAssignment -Identity '$NAME-calendars' -ErrorAction SilentlyContinue)) {
    New-ManagementRoleAssignment -Name '$NAME-calendars' -App '$CLIENT_ID' -Role 'Application Calendars.ReadWrite' -CustomResourceScope '$NAME'
} else {
    Set-ManagementRoleAssignment -Identity '$NAME-calendars' -CustomResourceScope '$NAME'
}
PS
    else
      cat <<PS
\$policies = @(Get-ApplicationAccessPolicy | Where-Object { \$_.AppId -eq '$CLIENT_ID' })
\$current = \$policies.Count -eq 1 -and (\$policies[0].ScopeName -eq \$group.Name -or \$policies[0].ScopeIdentity -eq \$group.Identity)
if (-not \$current) {
    # A policy's group cannot be changed: replace whatever this app has.
    \$policies | ForEach-Object { Remove-ApplicationAccessPolicy -Identity \$_.Identity -Confirm:\$false }
    New-ApplicationAccessPolicy -AppId '$CLIENT_ID' -PolicyScopeGroupId '$GROUP' -AccessRight RestrictAccess -Description 'calendar-sync: only the mapped mailboxes'
}
PS
    fi
  fi
  for mailbox in "${TESTS[@]}" "${DENIED[@]}"; do
    expected=True
    for denied in "${DENIED[@]}"; do
      if [ "$denied" = "$mailbox" ]; then expected=False; fi
    done
    if [ "$METHOD" = rbac ]; then
      cat <<PS
\$result = Test-ServicePrincipalAuthorization -Identity '$CLIENT_ID' -Resource '$mailbox' | Where-Object { \$_.RoleName -eq 'Application Calendars.ReadWrite' }
\$inScope = [bool](\$result | Where-Object { \$_.InScope })
\$result | Format-Table RoleName, AllowedResourceScope, ScopeType, InScope
if (\$inScope -ne \$$expected) { throw "$mailbox: in scope is \$inScope, expected \$$expected" }
Write-Host "ok: $mailbox in scope = \$inScope"
PS
    else
      cat <<PS
\$result = Test-ApplicationAccessPolicy -Identity '$mailbox' -AppId '$CLIENT_ID'
\$granted = \$result.AccessCheckResult -eq 'Granted'
if (\$granted -ne \$$expected) { throw "$mailbox: access \$(\$result.AccessCheckResult), expected granted = \$$expected" }
Write-Host "ok: $mailbox access = \$(\$result.AccessCheckResult)"
PS
    fi
  done
  # shellcheck disable=SC2016  # a PowerShell variable, written as is
  echo 'Disconnect-ExchangeOnline -Confirm:$false'
} >"$script"

if [ "$DRY_RUN" = 1 ]; then
  printf '# PowerShell that the next call runs (%s):\n' "$script"
  cat "$script"
  show_command pwsh -NoLogo -NoProfile -File "$script"
  exit 0
fi
require_tool pwsh "PowerShell 7: https://aka.ms/powershell"
show_command pwsh -NoLogo -NoProfile -File "$script"
# Not -NonInteractive: Connect-ExchangeOnline signs the admin in interactively.
pwsh -NoLogo -NoProfile -File "$script" || die "the Exchange step failed (message above); nothing after the failing cmdlet ran"
log "done; Exchange applies scope changes within 30 minutes to 2 hours"
