#!/usr/bin/env bash
# Sets up the credential the service signs in to Microsoft Graph with (docs/spec.md §6):
#
#   managed-identity (recommended)  the function app's user-assigned managed identity becomes a
#                                   federated identity credential of the app registration: the
#                                   app exchanges an identity token for a Graph token and no
#                                   secret or certificate exists to leak or expire.
#   certificate                     a self-signed certificate generated inside Key Vault (no
#                                   private key on this machine; only identities with a secret
#                                   read role on the vault, i.e. the app's, can read it), its
#                                   public part uploaded to the app registration.
#   secret                          a client secret created on the app registration and stored
#                                   straight into Key Vault with its expiry; never printed.
#
# Idempotent: an existing federated credential for the same identity, or a certificate or secret
# that is valid for more than 30 more days, is kept (--rotate makes a new one anyway).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Names the product reads by default (KEY_VAULT_CERTIFICATE_NAME, KEY_VAULT_SECRET_NAME).
CERTIFICATE_NAME=graph-client-certificate
SECRET_NAME=graph-client-secret
RENEW_DAYS=30

usage() {
  cat <<'USAGE'
usage: infra/scripts/credential.sh --mode managed-identity|certificate|secret [options]

For a registration that `azd up` created (infra/app/entra-credential.bicep), the managed
identity already is its federated credential: --mode managed-identity is needed only for a
registration made by app-registration.sh (GRAPH_CLIENT_ID set: sovereign clouds, or admins who
cannot grant consent during `azd up`). certificate and secret work with either.

  --env NAME                  managed-identity: the azd environment (default: $AZURE_ENV_NAME);
                              the credential is calendar-sync-<NAME>-managed-identity, the name
                              infra/app/entra-credential.bicep gives it
  --client-id ID              the app registration (default: $GRAPH_CLIENT_ID)
  --tenant-id ID              its directory (default: $AZURE_TENANT_ID, else the signed-in tenant)
  --identity-principal-id ID  managed-identity: object id of the function app's user-assigned
                              identity (default: $MANAGED_IDENTITY_PRINCIPAL_ID, an azd output)
  --vault NAME                certificate, secret: the Key Vault (default: $AZURE_KEY_VAULT_NAME)
  --months N                  certificate, secret: validity in months (default 12, at most 24)
  --rotate                    certificate, secret: make a new one even if the current one is fine
  --authority-host URL        Entra login host, the federated credential's issuer (default
                              https://login.microsoftonline.com)
  --audience AUD              federated credential audience (default api://AzureADTokenExchange;
                              US Gov: api://AzureADTokenExchangeUSGov, China:
                              api://AzureADTokenExchangeChina)
  --dry-run                   print the calls instead of making them (no login needed)
  -h, --help                  this text

After it: azd env set CREDENTIAL_MODE <managed_identity|certificate|secret> && azd provision
USAGE
}

MODE=''
ENV_NAME="${AZURE_ENV_NAME:-}"
CLIENT_ID="${GRAPH_CLIENT_ID:-}"
TENANT_ID="${AZURE_TENANT_ID:-}"
IDENTITY_PRINCIPAL_ID="${MANAGED_IDENTITY_PRINCIPAL_ID:-}"
VAULT="${AZURE_KEY_VAULT_NAME:-}"
MONTHS=12
ROTATE=0
AUTHORITY_HOST=https://login.microsoftonline.com
AUDIENCE=api://AzureADTokenExchange

while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE="${2:?--mode needs a value}"; shift 2 ;;
    --env) ENV_NAME="${2:?--env needs a value}"; shift 2 ;;
    --client-id) CLIENT_ID="${2:?--client-id needs a value}"; shift 2 ;;
    --tenant-id) TENANT_ID="${2:?--tenant-id needs a value}"; shift 2 ;;
    --identity-principal-id) IDENTITY_PRINCIPAL_ID="${2:?--identity-principal-id needs a value}"; shift 2 ;;
    --vault) VAULT="${2:?--vault needs a value}"; shift 2 ;;
    --months) MONTHS="${2:?--months needs a value}"; shift 2 ;;
    --rotate) ROTATE=1; shift ;;
    --authority-host) AUTHORITY_HOST="${2:?--authority-host needs a value}"; shift 2 ;;
    --audience) AUDIENCE="${2:?--audience needs a value}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

case "$MODE" in
  managed-identity | certificate | secret) ;;
  '') usage >&2; die "--mode is required" ;;
  *) die "--mode must be managed-identity, certificate or secret" ;;
esac
[ -n "$CLIENT_ID" ] || die "--client-id is required (the application id app-registration.sh printed)"
case "$MONTHS" in *[!0-9]* | '') die "--months must be a whole number" ;; esac
if [ "$MONTHS" -lt 1 ] || [ "$MONTHS" -gt 24 ]; then die "--months must be 1 to 24"; fi
if [ "$MODE" = managed-identity ]; then
  [ -n "$ENV_NAME" ] || die "--env is required: the azd environment the credential is for, which names it calendar-sync-<env>-managed-identity (--env \"\$(azd env get-value AZURE_ENV_NAME)\", or set AZURE_ENV_NAME)"
  # Part of a URL-friendly name, and of the JMESPath query below.
  case "$ENV_NAME" in *[!A-Za-z0-9._-]*) die "--env must be letters, digits, '.', '-' or '_' (got '$ENV_NAME')" ;; esac
  [ -n "$IDENTITY_PRINCIPAL_ID" ] || die "--identity-principal-id is required (azd env get-value MANAGED_IDENTITY_PRINCIPAL_ID)"
else
  [ -n "$VAULT" ] || die "--vault is required (azd env get-value AZURE_KEY_VAULT_NAME)"
fi
if [ "$DRY_RUN" = 1 ]; then log "dry run: printing the calls; nothing is changed"; fi

require_az_login "$TENANT_ID"
TENANT_ID="${TENANT_ID:-$SIGNED_IN_TENANT}"

# An ISO 8601 UTC time N months (or days, with a d suffix) from now; GNU date or BSD date.
future() {
  local amount="$1"
  if [ "${amount%d}" != "$amount" ]; then
    date -u -d "+${amount%d} days" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v+"${amount%d}"d +%Y-%m-%dT%H:%M:%SZ
  else
    date -u -d "+$amount months" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v+"$amount"m +%Y-%m-%dT%H:%M:%SZ
  fi
}

# still_valid EXPIRES: true when EXPIRES (ISO 8601) is more than RENEW_DAYS away.
still_valid() {
  [ -n "$1" ] || return 1
  [ "$ROTATE" = 0 ] || return 1
  [[ "$1" > "$(future "${RENEW_DAYS}d")" ]]
}

managed_identity() {
  # The name infra/app/entra-credential.bicep gives it: one credential per azd environment.
  local name="calendar-sync-$ENV_NAME-managed-identity"
  local issuer="$AUTHORITY_HOST/$TENANT_ID/v2.0" existing trusted='' body
  HINT="changing the app registration needs an owner of it, or Application Administrator / Cloud Application Administrator"
  capture existing '' az ad app federated-credential list --id "$CLIENT_ID" --query "[?name=='$name'].[subject, issuer] | [0]" -o tsv
  if [ -z "$existing" ]; then
    # Entra allows one credential per issuer and subject: one made under another name (an
    # earlier version of this script named it calendar-sync-managed-identity) already does it.
    capture trusted '' az ad app federated-credential list --id "$CLIENT_ID" --query "[?issuer=='$issuer' && subject=='$IDENTITY_PRINCIPAL_ID'].name | [0]" -o tsv
  fi
  private_temp_file body
  cat >"$body" <<JSON
{"name": "$name", "issuer": "$issuer", "subject": "$IDENTITY_PRINCIPAL_ID", "audiences": ["$AUDIENCE"], "description": "calendar-sync function app (azd environment $ENV_NAME): its user-assigned managed identity signs in as this app registration"}
JSON
  if [ -z "$existing" ] && [ -n "$trusted" ]; then
    log "the managed identity is already a federated credential of $CLIENT_ID, named $trusted; keeping it"
  elif [ -z "$existing" ]; then
    log "trusting the managed identity $IDENTITY_PRINCIPAL_ID as a credential of $CLIENT_ID"
    show_file 'federated identity credential' "$body"
    run az ad app federated-credential create --id "$CLIENT_ID" --parameters "@$body"
  elif [ "$existing" != "$IDENTITY_PRINCIPAL_ID"$'\t'"$issuer" ]; then
    log "the federated credential points at another identity or issuer; updating it"
    show_file 'federated identity credential' "$body"
    run az ad app federated-credential update --id "$CLIENT_ID" --federated-credential-id "$name" --parameters "@$body"
  else
    log "the managed identity is already a federated credential of $CLIENT_ID"
  fi
  cat <<DONE

next: switch the app to it, then remove the secrets and certificates it no longer needs:
  azd env set CREDENTIAL_MODE managed_identity && azd provision
  GET /api/admin/doctor                      # token check must pass
  az ad app credential list --id $CLIENT_ID  # then: az ad app credential delete --id $CLIENT_ID --key-id <keyId>
DONE
}

certificate() {
  local expires policy thumbprint registered registered_ends
  HINT="creating a certificate in the vault needs Key Vault Certificates Officer (or Administrator) on it; uploading it needs an owner of the app registration or Application Administrator"
  kv_show expires "$VAULT" certificate "$CERTIFICATE_NAME" attributes.expires
  if still_valid "$expires"; then
    log "certificate $CERTIFICATE_NAME is valid until $expires; keeping it (--rotate for a new one)"
  else
    log "creating certificate $CERTIFICATE_NAME in $VAULT (self-signed, valid $MONTHS months)"
    private_temp_file policy
    cat >"$policy" <<JSON
{
  "issuerParameters": {"name": "Self"},
  "keyProperties": {"exportable": true, "keyType": "RSA", "keySize": 2048, "reuseKey": false},
  "secretProperties": {"contentType": "application/x-pem-file"},
  "x509CertificateProperties": {"subject": "CN=calendar-sync $CLIENT_ID", "keyUsage": ["digitalSignature"], "validityInMonths": $MONTHS},
  "lifetimeActions": [{"trigger": {"daysBeforeExpiry": $RENEW_DAYS}, "action": {"actionType": "EmailContacts"}}]
}
JSON
    show_file 'certificate policy' "$policy"
    kv_run az keyvault certificate create --vault-name "$VAULT" --name "$CERTIFICATE_NAME" --policy "@$policy"
  fi
  capture thumbprint '<thumbprint>' az keyvault certificate show --vault-name "$VAULT" --name "$CERTIFICATE_NAME" --query x509ThumbprintHex -o tsv
  capture expires '<expiry>' az keyvault certificate show --vault-name "$VAULT" --name "$CERTIFICATE_NAME" --query attributes.expires -o tsv
  capture registered '' az ad app credential list --id "$CLIENT_ID" --cert --query '[].[customKeyIdentifier, endDateTime]' -o tsv
  # Already uploaded: a key credential with this thumbprint, or one that ends the same second.
  registered_ends="$(printf '%s\n' "$registered" | cut -f2 | cut -c1-19)"
  if printf '%s\n' "$registered" | cut -f1 | grep -qix -- "$thumbprint" ||
    { [ -n "$expires" ] && printf '%s\n' "$registered_ends" | grep -qx -- "${expires:0:19}"; }; then
    log "the app registration already has this certificate"
  else
    log "uploading the certificate's public part to the app registration (older ones stay until you remove them)"
    run az ad app credential reset --id "$CLIENT_ID" --keyvault "$VAULT" --cert "$CERTIFICATE_NAME" --append
  fi
  cat <<DONE

next: azd env set CREDENTIAL_MODE certificate && azd provision
DONE
}

secret() {
  local expires end_date password file
  HINT="adding a secret needs an owner of the app registration or Application Administrator; storing it needs Key Vault Secrets Officer on $VAULT (the deployment grants it to AZURE_PRINCIPAL_ID)"
  kv_show expires "$VAULT" secret "$SECRET_NAME" attributes.expires
  if still_valid "$expires"; then
    log "secret $SECRET_NAME is valid until $expires; keeping it (--rotate for a new one)"
    return 0
  fi
  end_date="$(future "$MONTHS")"
  log "adding a client secret valid until $end_date to $CLIENT_ID (existing secrets stay valid)"
  capture password '<secret value>' az ad app credential reset --id "$CLIENT_ID" --append --display-name "calendar-sync $(date -u +%Y-%m-%d)" --end-date "$end_date" --query password -o tsv
  private_temp_file file
  printf '%s' "$password" >"$file"
  unset password
  log "storing it in $VAULT as $SECRET_NAME with its expiry (the value is never printed)"
  kv_run az keyvault secret set --vault-name "$VAULT" --name "$SECRET_NAME" --file "$file" --encoding utf-8 --expires "$end_date" --content-type "client secret of app $CLIENT_ID" --output none
  cat <<DONE

next: azd env set CREDENTIAL_MODE secret && azd provision
      (the app picks up a new secret version within 24 hours, or at once on restart)
DONE
}

case "$MODE" in
  managed-identity) managed_identity ;;
  certificate) certificate ;;
  secret) secret ;;
esac
