#!/usr/bin/env bash
# Stores the two Standard Webhooks secrets in Key Vault, where the app settings
# BOOKING_WEBHOOK_SECRET and PLATFORM_WEBHOOK_SECRET reference them:
#
#   booking-webhook-secret   the booking platform signs booking events with it; give it to the
#                            platform (infra/scripts/handover.sh prints it)
#   platform-webhook-secret  this service signs the events it posts to the platform with it
#
# A secret that exists is kept (the platform already has it). A missing one is taken from the
# environment variable of the same setting name if set (a secret the platform issued), else
# generated: "whsec_" + base64 of 32 random bytes. Values never appear in output or in a
# command line (they go through a private temporary file).
#
# azd runs this after every `azd provision` (azure.yaml, postprovision hook), so the app finds
# both secrets when it first starts.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'USAGE'
usage: infra/scripts/webhook-secrets.sh [--vault NAME] [--dry-run]

  --vault NAME   the Key Vault (default: $AZURE_KEY_VAULT_NAME, an azd output)
  --rotate NAME  replace this secret (booking-webhook-secret or platform-webhook-secret) with a
                 new value; the old version stays in the vault's history
  --dry-run      print the calls instead of making them (no login needed)

Environment: BOOKING_WEBHOOK_SECRET, PLATFORM_WEBHOOK_SECRET (whsec_...) to store a given value
instead of generating one.
USAGE
}

VAULT="${AZURE_KEY_VAULT_NAME:-}"
ROTATE=''
while [ $# -gt 0 ]; do
  case "$1" in
    --vault) VAULT="${2:?--vault needs a value}"; shift 2 ;;
    --rotate) ROTATE="${2:?--rotate needs a secret name}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -n "$VAULT" ] || die "--vault is required (azd env get-value AZURE_KEY_VAULT_NAME)"
case "$ROTATE" in '' | booking-webhook-secret | platform-webhook-secret) ;; *) die "--rotate takes booking-webhook-secret or platform-webhook-secret" ;; esac
if [ "$DRY_RUN" = 1 ]; then log "dry run: printing the calls; nothing is changed"; fi

require_az_login
if [ "$DRY_RUN" = 0 ]; then require_tool openssl "to generate random secrets"; fi
HINT="writing secrets needs Key Vault Secrets Officer on $VAULT (the deployment grants it to AZURE_PRINCIPAL_ID, the admin who ran azd provision)"

# store_secret NAME SETTING: make sure secret NAME exists (or is replaced when rotating).
store_secret() {
  local name="$1" setting="$2" existing value file
  kv_show existing "$VAULT" secret "$name" id
  if [ -n "$existing" ] && [ "$ROTATE" != "$name" ]; then
    log "$name exists in $VAULT; keeping it"
    return 0
  fi
  value="${!setting:-}"
  if [ -n "$value" ] && [ "$ROTATE" != "$name" ]; then
    case "$value" in whsec_*) ;; *) die "$setting must be a Standard Webhooks secret starting with whsec_" ;; esac
    log "storing $name from \$$setting"
  else
    log "generating $name"
    if [ "$DRY_RUN" = 1 ]; then value='whsec_<32 random bytes, base64>'; else value="whsec_$(openssl rand -base64 32)"; fi
  fi
  private_temp_file file
  printf '%s' "$value" >"$file"
  unset value
  kv_run az keyvault secret set --vault-name "$VAULT" --name "$name" --file "$file" --encoding utf-8 --content-type 'Standard Webhooks secret' --output none
}

store_secret booking-webhook-secret BOOKING_WEBHOOK_SECRET
store_secret platform-webhook-secret PLATFORM_WEBHOOK_SECRET

cat <<DONE

The booking platform gets both values, with its URL and key, from infra/scripts/handover.sh
(the last step of azd up), to send over a secure channel.
After a rotation the app picks up the new value within 24 hours, or at once on restart:
  az functionapp restart -g <resource group> -n <function app>
DONE
