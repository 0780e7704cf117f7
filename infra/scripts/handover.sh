#!/usr/bin/env bash
# Prints exactly what the booking platform needs to talk to this deployment:
#
#   booking URL      https://<app>/api/bookings/events, where the platform posts booking events
#   function key     the `platform` key of booking_events: sent as the x-functions-key header,
#                    it opens the booking route and no other (infra/app/function-keys.bicep)
#   booking secret   booking-webhook-secret: the platform signs its booking events with it
#   platform secret  platform-webhook-secret: this service signs the events it posts to the
#                    platform's webhook URL with it; the platform verifies them with it
#
# The values are read where they live (the key from the function app, the secrets from Key
# Vault) and printed for the admin to pass on over a secure channel. `--json` prints one JSON
# object for a machine instead. azd runs this as the last step of `azd up` (azure.yaml, postup).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'USAGE'
usage: infra/scripts/handover.sh [--json] [options]

  --json                 one JSON object on stdout (booking_url, function_key_header,
                         function_key, booking_webhook_secret, platform_webhook_secret,
                         platform_webhook_url)
  --resource-group NAME  (default: $AZURE_RESOURCE_GROUP, an azd output)
  --app NAME             the function app (default: $AZURE_FUNCTION_APP_NAME)
  --vault NAME           the Key Vault (default: $AZURE_KEY_VAULT_NAME)
  --url URL              the app's public https origin (default: $PUBLIC_BASE_URL)
  --dry-run              print the calls instead of making them (no login needed)
  -h, --help             this text
USAGE
}

RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-}"
APP="${AZURE_FUNCTION_APP_NAME:-}"
VAULT="${AZURE_KEY_VAULT_NAME:-}"
BASE_URL="${PUBLIC_BASE_URL:-}"
BOOKING_FUNCTION="${BOOKING_FUNCTION_NAME:-booking_events}"
BOOKING_KEY="${BOOKING_KEY_NAME:-platform}"
JSON=0
while [ $# -gt 0 ]; do
  case "$1" in
    --json) JSON=1; shift ;;
    --resource-group) RESOURCE_GROUP="${2:?--resource-group needs a value}"; shift 2 ;;
    --app) APP="${2:?--app needs a value}"; shift 2 ;;
    --vault) VAULT="${2:?--vault needs a value}"; shift 2 ;;
    --url) BASE_URL="${2:?--url needs a value}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -n "$RESOURCE_GROUP" ] || die "--resource-group is required (azd env get-value AZURE_RESOURCE_GROUP)"
[ -n "$APP" ] || die "--app is required (azd env get-value AZURE_FUNCTION_APP_NAME)"
[ -n "$VAULT" ] || die "--vault is required (azd env get-value AZURE_KEY_VAULT_NAME)"
if [ -z "$BASE_URL" ]; then BASE_URL="https://$APP.azurewebsites.net"; fi
case "$BASE_URL" in https://*) ;; *) die "--url must start with https:// (got $BASE_URL)" ;; esac
BASE_URL="${BASE_URL%/}"
if [ "$DRY_RUN" = 1 ]; then log "dry run: printing the calls; nothing is read"; fi

# In --json mode stdout is the JSON alone: the calls are printed on stderr.
if [ "$JSON" = 1 ]; then exec 3>&1 1>&2; fi

require_az_login
HINT="reading the secrets needs Key Vault Secrets Officer (or Secrets User) on $VAULT; reading the key needs Contributor on $RESOURCE_GROUP"

key='' booking_secret='' platform_secret=''
capture key '<function key>' az functionapp function keys list -g "$RESOURCE_GROUP" -n "$APP" --function-name "$BOOKING_FUNCTION" --query "$BOOKING_KEY" -o tsv
[ -n "$key" ] || die "function $BOOKING_FUNCTION has no key '$BOOKING_KEY': run infra/scripts/function-keys.sh (azd deploy runs it)"
kv_show booking_secret "$VAULT" secret booking-webhook-secret value
kv_show platform_secret "$VAULT" secret platform-webhook-secret value
if [ "$DRY_RUN" = 1 ]; then
  booking_secret='<booking-webhook-secret>'
  platform_secret='<platform-webhook-secret>'
fi
[ -n "$booking_secret" ] && [ -n "$platform_secret" ] ||
  die "a webhook secret is missing in $VAULT: run infra/scripts/webhook-secrets.sh (azd provision runs it)"
URL="$BASE_URL/api/bookings/events"
PLATFORM_URL="${PLATFORM_WEBHOOK_URL:-}"
SIGNED_FOR="${PLATFORM_URL:-the platform webhook URL}"

json_string() {
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '"%s"' "$s"
}

if [ "$JSON" = 1 ]; then
  exec 1>&3 3>&-
  printf '{"booking_url": %s, "function_key_header": "x-functions-key", "function_key": %s, "booking_webhook_secret": %s, "platform_webhook_secret": %s, "platform_webhook_url": %s}\n' \
    "$(json_string "$URL")" "$(json_string "$key")" "$(json_string "$booking_secret")" \
    "$(json_string "$platform_secret")" "$(json_string "$PLATFORM_URL")"
  exit 0
fi

cat <<HANDOVER

==================== for the booking platform ====================
Send these four values to the booking platform over a secure channel (a password manager's
sharing, or an encrypted message), never in plain e-mail, chat or a ticket:

  booking URL      $URL
  function key     $key
                   (send it as the x-functions-key header; it opens the booking route only)
  booking secret   $booking_secret
                   (the platform signs its booking events with it, Standard Webhooks)
  platform secret  $platform_secret
                   (this service signs what it posts to $SIGNED_FOR; the platform verifies with it)
==================================================================
Print them again at any time: infra/scripts/handover.sh (or --json for a machine).
HANDOVER
