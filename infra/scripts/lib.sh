# shellcheck shell=bash
# Shared by infra/scripts/*.sh (sourced, not run): dry-run, logging, prerequisite checks.
#
# Every call that changes something goes through `run`; every read goes through `capture`.
# With --dry-run both print the command instead of running it, reads come back empty (as if
# nothing existed yet) and ids that a create would return print as <placeholders>, so a dry run
# shows the full set of calls of a first-time set-up without az, pwsh or a login.

DRY_RUN=0

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Quote one argument the way a POSIX shell reads it back: bare when safe, else in single quotes.
shell_quote() {
  case "$1" in
    '') printf "''" ;;
    *[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

# The command as one line a shell would read back.
quote_command() {
  local line='' arg
  for arg in "$@"; do line+="$(shell_quote "$arg") "; done
  printf '%s' "${line% }"
}

show_command() { printf '+ %s\n' "$(quote_command "$@")"; }

# run CMD...: a call that changes something. Printed, then run unless --dry-run.
run() {
  show_command "$@"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  "$@" || die "this call failed: $(quote_command "$@")${HINT:+
hint: $HINT}"
}

# capture VAR PLACEHOLDER CMD...: a call whose output the script needs (a read, or a create
# that returns an id). Sets VAR to its trimmed stdout. In a dry run it only prints the call and
# sets VAR to PLACEHOLDER (empty for reads: the dry run shows the first-time path).
capture() {
  local __var="$1" __placeholder="$2" __out
  shift 2
  show_command "$@"
  if [ "$DRY_RUN" = 1 ]; then
    printf -v "$__var" '%s' "$__placeholder"
    return 0
  fi
  __out="$("$@")" || die "this call failed: $(quote_command "$@")${HINT:+
hint: $HINT}"
  __out="${__out%$'\n'}"
  printf -v "$__var" '%s' "$__out"
}

# capture_quiet VAR CMD...: like capture for a read that may fail because the object does not
# exist (az ... show); failure leaves VAR empty instead of stopping the script.
capture_quiet() {
  local __var="$1" __out
  shift
  show_command "$@"
  if [ "$DRY_RUN" = 1 ]; then
    printf -v "$__var" '%s' ''
    return 0
  fi
  __out="$("$@" 2>/dev/null)" || __out=''
  __out="${__out%$'\n'}"
  printf -v "$__var" '%s' "$__out"
}

# Key Vault calls right after `azd provision` can meet a role assignment that is still
# propagating (403 for a few minutes). These retry such failures, not "not found".
KV_RETRIES="${KV_RETRIES:-8}"
KV_RETRY_SECONDS="${KV_RETRY_SECONDS:-15}"

# kv_show VAR VAULT KIND NAME QUERY: `az keyvault KIND show ... --query QUERY -o tsv` into VAR;
# empty when the item does not exist.
kv_show() {
  local __var="$1" vault="$2" kind="$3" name="$4" query="$5" __out __err attempt=1
  local cmd=(az keyvault "$kind" show --vault-name "$vault" --name "$name" --query "$query" -o tsv)
  show_command "${cmd[@]}"
  printf -v "$__var" '%s' ''
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  private_temp_file __err
  while ! __out="$("${cmd[@]}" 2>"$__err")"; do
    if grep -qi 'NotFound' "$__err"; then return 0; fi
    kv_wait "$attempt" "$__err" "${cmd[@]}"
    attempt=$((attempt + 1))
  done
  printf -v "$__var" '%s' "${__out%$'\n'}"
}

# kv_run CMD...: like run, for a Key Vault write, retrying while access is being granted.
kv_run() {
  local attempt=1 __err
  show_command "$@"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  private_temp_file __err
  until "$@" 2>"$__err"; do
    kv_wait "$attempt" "$__err" "$@"
    attempt=$((attempt + 1))
  done
}

kv_wait() {
  local attempt="$1" err="$2"
  shift 2
  if [ "$attempt" -ge "$KV_RETRIES" ]; then
    die "this call failed: $(quote_command "$@")
$(head -c 600 "$err")${HINT:+
hint: $HINT}"
  fi
  warn "Key Vault refused ($(head -c 160 "$err" | tr '\n' ' ')); a new role assignment can take minutes to apply: retrying in ${KV_RETRY_SECONDS}s ($attempt/$KV_RETRIES)"
  sleep "$KV_RETRY_SECONDS"
}

# show_file LABEL PATH: a request body the next call sends, printed in a dry run.
show_file() {
  [ "$DRY_RUN" = 1 ] || return 0
  printf '# %s (%s):\n' "$1" "$2"
  sed 's/^/#   /' "$2"
}

require_tool() {
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  command -v "$1" >/dev/null 2>&1 || die "$1 is required and not installed ($2)"
}

# The Azure CLI is installed and signed in (to the expected tenant, when one is given).
# Sets SIGNED_IN_TENANT.
require_az_login() {
  local expected_tenant="${1:-}" tenant
  require_tool az "https://aka.ms/azure-cli"
  capture_quiet tenant az account show --query tenantId -o tsv
  # shellcheck disable=SC2034  # read by the scripts that source this file
  SIGNED_IN_TENANT="${tenant:-<tenant-id>}"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  [ -n "$tenant" ] || die "not signed in to the Azure CLI: run 'az login${expected_tenant:+ --tenant $expected_tenant}' (add --allow-no-subscriptions for a directory without a subscription)"
  if [ -n "$expected_tenant" ] && [ "$tenant" != "$expected_tenant" ]; then
    die "the Azure CLI is signed in to tenant $tenant, not $expected_tenant: run 'az login --tenant $expected_tenant'"
  fi
}

# private_temp_file VAR: a temporary file readable by this user only (it may hold a secret),
# removed when the script exits.
private_temp_file() {
  local __path
  __path="$(umask 077 && mktemp "${TMPDIR:-/tmp}/calsync.XXXXXX")" || die "cannot create a temporary file"
  TEMP_FILES+=("$__path")
  printf -v "$1" '%s' "$__path"
}

TEMP_FILES=()
cleanup_temp_files() {
  local f
  for f in "${TEMP_FILES[@]}"; do rm -f "$f"; done
}
trap cleanup_temp_files EXIT
