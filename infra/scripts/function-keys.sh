#!/usr/bin/env bash
# Sets the function app's two access keys (infra/app/function-keys.bicep):
#
#   platform  a function key of booking_events: opens POST /api/bookings/events only. The
#             booking platform gets it (infra/scripts/handover.sh prints it).
#   admin     a host key: opens the admin routes (status page, doctor, mappings).
#
# Their values live in Key Vault (booking-function-key, admin-function-key): generated once
# (43 random URL-safe characters), kept on later runs, so a redeployment never changes the key
# the platform holds. They reach the template as secure parameters in a private temporary file,
# never on a command line or in the output.
#
# A function key can only be set once the host has loaded the function, i.e. after the code is
# deployed: azd runs this after every deploy (azure.yaml, postdeploy hook), and it waits (up to
# --wait seconds) for booking_events to appear.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'USAGE'
usage: infra/scripts/function-keys.sh [options]

  --resource-group NAME  (default: $AZURE_RESOURCE_GROUP, an azd output)
  --app NAME             the function app (default: $AZURE_FUNCTION_APP_NAME)
  --vault NAME           the Key Vault holding the key values (default: $AZURE_KEY_VAULT_NAME)
  --rotate platform|admin  give this key a new value (then hand the platform its new key:
                         infra/scripts/handover.sh); the old value stops working at once
  --wait SECONDS         how long to wait for the deployed code's functions (default 300)
  --dry-run              print the calls instead of making them (no login needed)
  -h, --help             this text
USAGE
}

RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-}"
APP="${AZURE_FUNCTION_APP_NAME:-}"
VAULT="${AZURE_KEY_VAULT_NAME:-}"
BOOKING_FUNCTION="${BOOKING_FUNCTION_NAME:-booking_events}"
BOOKING_KEY="${BOOKING_KEY_NAME:-platform}"
ADMIN_KEY="${ADMIN_KEY_NAME:-admin}"
ROTATE=''
WAIT_SECONDS=300
POLL_SECONDS="${FUNCTION_POLL_SECONDS:-15}"
while [ $# -gt 0 ]; do
  case "$1" in
    --resource-group) RESOURCE_GROUP="${2:?--resource-group needs a value}"; shift 2 ;;
    --app) APP="${2:?--app needs a value}"; shift 2 ;;
    --vault) VAULT="${2:?--vault needs a value}"; shift 2 ;;
    --rotate) ROTATE="${2:?--rotate needs platform or admin}"; shift 2 ;;
    --wait) WAIT_SECONDS="${2:?--wait needs seconds}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -n "$RESOURCE_GROUP" ] || die "--resource-group is required (azd env get-value AZURE_RESOURCE_GROUP)"
[ -n "$APP" ] || die "--app is required (azd env get-value AZURE_FUNCTION_APP_NAME)"
[ -n "$VAULT" ] || die "--vault is required (azd env get-value AZURE_KEY_VAULT_NAME)"
case "$ROTATE" in '' | platform | admin) ;; *) die "--rotate takes platform or admin" ;; esac
case "$WAIT_SECONDS" in '' | *[!0-9]*) die "--wait takes a number of seconds" ;; esac
if [ "$DRY_RUN" = 1 ]; then log "dry run: printing the calls; nothing is changed"; fi

TEMPLATE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../app" && pwd)/function-keys.bicep"

require_az_login
if [ "$DRY_RUN" = 0 ]; then require_tool openssl "to generate random keys"; fi
HINT="reading and writing the key values needs Key Vault Secrets Officer on $VAULT (the deployment grants it to AZURE_PRINCIPAL_ID, the admin who ran azd provision); setting keys needs Contributor on $RESOURCE_GROUP"

# ---- the deployed code's booking function ----
found='' waited=0
while :; do
  capture_quiet found az functionapp function show -g "$RESOURCE_GROUP" -n "$APP" --function-name "$BOOKING_FUNCTION" --query name -o tsv
  if [ -n "$found" ] || [ "$DRY_RUN" = 1 ]; then break; fi
  if [ "$waited" -ge "$WAIT_SECONDS" ]; then
    die "function $BOOKING_FUNCTION not found in $APP after ${WAIT_SECONDS}s: deploy the code first (azd deploy), then run this again"
  fi
  log "waiting for the deployed code's functions to load (${waited}s of ${WAIT_SECONDS}s)"
  sleep "$POLL_SECONDS"
  waited=$((waited + POLL_SECONDS))
done

# ---- the values, in Key Vault ----
# ensure_value VAR SECRET KEY: VAR gets the value of SECRET, generated (or replaced, when KEY is
# being rotated) first if needed.
ensure_value() {
  local __var="$1" secret="$2" key="$3" existing file value
  kv_show existing "$VAULT" secret "$secret" id
  if [ -z "$existing" ] || [ "$ROTATE" = "$key" ]; then
    log "generating $secret (the $key key)"
    if [ "$DRY_RUN" = 1 ]; then value='<43 random characters>'; else value="$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')"; fi
    private_temp_file file
    printf '%s' "$value" >"$file"
    kv_run az keyvault secret set --vault-name "$VAULT" --name "$secret" --file "$file" --encoding utf-8 --content-type 'Azure Functions access key' --output none
  else
    log "$secret exists in $VAULT; keeping it"
  fi
  kv_show value "$VAULT" secret "$secret" value
  if [ "$DRY_RUN" = 1 ]; then value="<$secret>"; fi
  [ -n "$value" ] || die "$secret in $VAULT is empty"
  printf -v "$__var" '%s' "$value"
}

booking_value='' admin_value='' parameters=''
ensure_value booking_value booking-function-key "$BOOKING_KEY"
ensure_value admin_value admin-function-key "$ADMIN_KEY"

# ---- the keys, through the template ----
private_temp_file parameters
cat >"$parameters" <<JSON
{
  "\$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {
    "appName": { "value": "$APP" },
    "bookingFunctionName": { "value": "$BOOKING_FUNCTION" },
    "bookingKeyName": { "value": "$BOOKING_KEY" },
    "adminKeyName": { "value": "$ADMIN_KEY" },
    "bookingKeyValue": { "value": "$booking_value" },
    "adminKeyValue": { "value": "$admin_value" }
  }
}
JSON
unset booking_value admin_value
run az deployment group create -g "$RESOURCE_GROUP" -n calendar-sync-function-keys -f "$TEMPLATE" --parameters "@$parameters" --output none

log "set: function key '$BOOKING_KEY' of $BOOKING_FUNCTION (the booking route only), host key '$ADMIN_KEY' (admin routes)"
