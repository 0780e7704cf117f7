#!/usr/bin/env bash
# Creates (or brings up to date) the Entra app registration the service signs in to Microsoft
# Graph with, with exactly the application permissions of docs/spec.md §5 and nothing else, and
# grants admin consent or prints the consent URL for an admin who can.
#
# Permissions (why each: docs/permissions.md):
#   Calendars.ReadWrite            read and write the mapped mailboxes' calendars. With
#                                  --mailbox-scope rbac (default) it is NOT granted here: Exchange
#                                  grants it for the scoped mailboxes only (mailbox-scope.sh),
#                                  because an Entra grant would reach every mailbox and Exchange
#                                  RBAC can only add to it, never narrow it.
#   Place.Read.All                 list rooms and room lists for mapping
#   User.Read.All                  resolve mailbox addresses, check they exist
#   Application.ReadWrite.OwnedBy  only with --enable-rotation: the app adds and removes its own
#                                  client secrets (its service principal becomes an owner of the
#                                  registration, and that is all it can manage)
#
# Idempotent: it finds the registration by display name; running it again changes only what
# differs (permissions are set as a whole list, grants that are no longer wanted are removed).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
# Microsoft Graph application permission (app role) ids, the same in every tenant.
ROLE_CALENDARS_READWRITE=ef54d2bf-783f-4e0f-bca1-3210c0444d99
ROLE_PLACE_READ_ALL=913b9306-0ce1-42b8-9137-6a7df690a760
ROLE_USER_READ_ALL=df021288-bdef-4463-88db-98f22de89214
ROLE_APPLICATION_READWRITE_OWNEDBY=18a4783c-866b-4cc7-a460-3d5e5662c884
# Directory roles that may grant admin consent to application permissions of Microsoft Graph.
GLOBAL_ADMINISTRATOR=62e90394-69f5-4237-9190-012177145e10
PRIVILEGED_ROLE_ADMINISTRATOR=e8611ab8-c189-46e8-94e1-60213ab1f814

usage() {
  cat <<'USAGE'
usage: infra/scripts/app-registration.sh [options]

`azd up` creates the app registration itself, one per azd environment, with these permissions
and admin consent (infra/app/entra.bicep, Microsoft Graph Bicep extension). Use this script
instead where that cannot run: in sovereign clouds (the extension deploys in the Azure public
cloud only), or when whoever runs `azd up` cannot grant admin consent (this script prints the
consent URL for an admin). Then `azd env set GRAPH_CLIENT_ID <CLIENT_ID>` before `azd up`, and
the deployment uses this registration and creates none.

  --name NAME               display name of the app registration (default: calendar-sync)
  --tenant-id ID            directory to create it in (default: the Azure CLI's signed-in tenant)
  --mailbox-scope MODE      rbac (default): Calendars.ReadWrite comes from Exchange RBAC for
                            Applications, scoped to a group (mailbox-scope.sh --method rbac);
                            policy: granted here tenant-wide, then narrowed by an Exchange
                            ApplicationAccessPolicy (mailbox-scope.sh --method policy);
                            tenant: granted here for every mailbox (not recommended)
  --enable-rotation         add Application.ReadWrite.OwnedBy so the app rotates its own secret
  --consent WHEN            auto (default): grant admin consent when you are Global or Privileged
                            Role Administrator, else print the consent URL; url: only print it
  --authority-host URL      Entra login host for the consent URL (default
                            https://login.microsoftonline.com; sovereign clouds differ)
  --graph-endpoint URL      Microsoft Graph root (default https://graph.microsoft.com)
  --dry-run                 print the calls instead of making them (no login needed)
  -h, --help                this text
USAGE
}

NAME=calendar-sync
TENANT_ID=''
MAILBOX_SCOPE=rbac
ENABLE_ROTATION=0
CONSENT=auto
AUTHORITY_HOST=https://login.microsoftonline.com
GRAPH_ENDPOINT=https://graph.microsoft.com

while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --tenant-id) TENANT_ID="${2:?--tenant-id needs a value}"; shift 2 ;;
    --mailbox-scope) MAILBOX_SCOPE="${2:?--mailbox-scope needs a value}"; shift 2 ;;
    --enable-rotation) ENABLE_ROTATION=1; shift ;;
    --consent) CONSENT="${2:?--consent needs a value}"; shift 2 ;;
    --authority-host) AUTHORITY_HOST="${2:?--authority-host needs a value}"; shift 2 ;;
    --graph-endpoint) GRAPH_ENDPOINT="${2:?--graph-endpoint needs a value}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
case "$MAILBOX_SCOPE" in rbac | policy | tenant) ;; *) die "--mailbox-scope must be rbac, policy or tenant" ;; esac
case "$CONSENT" in auto | url) ;; *) die "--consent must be auto or url" ;; esac
case "$NAME" in *[!A-Za-z0-9\ ._-]* | '') die "--name may contain letters, digits, spaces, '.', '_' and '-'" ;; esac

if [ "$DRY_RUN" = 1 ]; then log "dry run: printing the calls a first-time set-up makes; nothing is changed"; fi

# ---- prerequisites: az, signed in to the right tenant ----
require_az_login "$TENANT_ID"
TENANT_ID="${TENANT_ID:-$SIGNED_IN_TENANT}"

# ---- the permissions, as one list ----
wanted_roles=("$ROLE_PLACE_READ_ALL" "$ROLE_USER_READ_ALL")
[ "$MAILBOX_SCOPE" = rbac ] || wanted_roles+=("$ROLE_CALENDARS_READWRITE")
if [ "$ENABLE_ROTATION" = 1 ]; then wanted_roles+=("$ROLE_APPLICATION_READWRITE_OWNEDBY"); fi

# Filled in by private_temp_file / capture (indirect assignment).
permissions_file='' app_ids='' APP_ID='' SP_ID='' owner_ids='' my_roles='' grants=''
private_temp_file permissions_file
{
  printf '[{"resourceAppId": "%s", "resourceAccess": [' "$GRAPH_APP_ID"
  sep=''
  for role in "${wanted_roles[@]}"; do
    printf '%s{"id": "%s", "type": "Role"}' "$sep" "$role"
    sep=', '
  done
  printf ']}]\n'
} >"$permissions_file"

# ---- the app registration ----
HINT="creating an app registration needs the Application Developer role, or 'Users can register applications' left on (Entra ID > User settings)"
capture app_ids '' az ad app list --filter "displayName eq '$NAME'" --query '[].appId' -o tsv
if [ -n "$app_ids" ] && [ "$(printf '%s\n' "$app_ids" | wc -l)" -gt 1 ]; then
  die "several app registrations are called '$NAME' ($(printf '%s' "$app_ids" | tr '\n' ' ')); pass --name with a unique name"
fi
if [ -n "$app_ids" ]; then
  APP_ID="$app_ids"
  log "app registration '$NAME' exists: $APP_ID"
else
  log "creating app registration '$NAME' (single tenant)"
  capture APP_ID '<app-id>' az ad app create --display-name "$NAME" --sign-in-audience AzureADMyOrg --query appId -o tsv
fi

log "setting its Microsoft Graph application permissions (the whole list, replacing any other)"
show_file 'required resource access' "$permissions_file"
run az ad app update --id "$APP_ID" --required-resource-accesses "@$permissions_file"

capture_quiet SP_ID az ad sp show --id "$APP_ID" --query id -o tsv
if [ -z "$SP_ID" ]; then
  log "creating its service principal (enterprise application)"
  capture SP_ID '<service-principal-object-id>' az ad sp create --id "$APP_ID" --query id -o tsv
fi

# Rotation: the app manages only registrations it owns, so it must own its own.
capture owner_ids '' az ad app owner list --id "$APP_ID" --query '[].id' -o tsv
if [ "$ENABLE_ROTATION" = 1 ]; then
  if ! printf '%s\n' "$owner_ids" | grep -qx -- "$SP_ID"; then
    log "making the service principal an owner of the registration (secret rotation)"
    run az ad app owner add --id "$APP_ID" --owner-object-id "$SP_ID"
  fi
elif printf '%s\n' "$owner_ids" | grep -qx -- "$SP_ID"; then
  log "rotation is off: removing the service principal from the registration's owners"
  run az ad app owner remove --id "$APP_ID" --owner-object-id "$SP_ID"
fi

# ---- admin consent ----
CONSENT_URL="$AUTHORITY_HOST/$TENANT_ID/adminconsent?client_id=$APP_ID"
can_consent=0
if [ "$CONSENT" = auto ]; then
  capture my_roles '' az rest --method get --url "$GRAPH_ENDPOINT/v1.0/me/transitiveMemberOf/microsoft.graph.directoryRole?\$select=roleTemplateId" --query 'value[].roleTemplateId' -o tsv
  if printf '%s\n' "$my_roles" | grep -qx -e "$GLOBAL_ADMINISTRATOR" -e "$PRIVILEGED_ROLE_ADMINISTRATOR"; then
    can_consent=1
  fi
  if [ "$DRY_RUN" = 1 ]; then can_consent=1; fi
fi

if [ "$can_consent" = 1 ]; then
  HINT="granting consent to Microsoft Graph application permissions needs Global Administrator or Privileged Role Administrator"
  # Grants that are no longer in the list (e.g. Calendars.ReadWrite after moving to rbac) are
  # removed: admin consent only ever adds.
  capture grants '' az rest --method get --url "$GRAPH_ENDPOINT/v1.0/servicePrincipals/$SP_ID/appRoleAssignments" --query "value[?resourceDisplayName=='Microsoft Graph'].[id, appRoleId]" -o tsv
  while read -r grant_id role_id; do
    [ -n "$grant_id" ] || continue
    keep=0
    for role in "${wanted_roles[@]}"; do
      if [ "$role" = "$role_id" ]; then keep=1; fi
    done
    if [ "$keep" = 0 ]; then
      log "removing the Graph grant $role_id, which is not in the list"
      run az rest --method delete --url "$GRAPH_ENDPOINT/v1.0/servicePrincipals/$SP_ID/appRoleAssignments/$grant_id"
    fi
  done <<<"$grants"
  log "granting admin consent to the listed permissions"
  run az ad app permission admin-consent --id "$APP_ID"
  if [ "$DRY_RUN" = 1 ]; then printf 'consent URL (for an admin, when you cannot consent): %s\n' "$CONSENT_URL"; fi
else
  log "you are not Global Administrator or Privileged Role Administrator (or --consent url):"
  log "an admin who is opens this URL once and accepts:"
  printf 'consent URL: %s\n' "$CONSENT_URL"
fi

SCOPE_METHOD=rbac
if [ "$MAILBOX_SCOPE" = policy ]; then SCOPE_METHOD=policy; fi
cat <<DONE

app registration: $NAME
  CLIENT_ID (application id): $APP_ID
  TENANT_ID:                  $TENANT_ID
  service principal:          $SP_ID
  mailbox scope:              $MAILBOX_SCOPE

next:
  azd env set GRAPH_CLIENT_ID $APP_ID
  azd up                                   # or: azd provision, then azd deploy
  infra/scripts/credential.sh --mode managed-identity --env <azd environment> --client-id $APP_ID
  infra/scripts/mailbox-scope.sh --method $SCOPE_METHOD --client-id $APP_ID --group <mail-enabled security group>
DONE
