#!/usr/bin/env bash
# Shared by the setup-*.sh scripts (sourced, not run): printing, --dry-run and idempotent helpers.
#
# Every command that changes the system goes through `run` / `as_root` / `write_root_file`, so a
# --dry-run prints exactly what a real run would do and changes nothing. Reading commands
# (dpkg-query, id, getent, test) run in both modes: they decide which steps are still needed.

DRY_RUN="${DRY_RUN:-0}"
SCRIPT_NAME="${SCRIPT_NAME:-setup}"

step() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
warn() { printf '   warning: %s\n' "$*"; }

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

# The command as one could paste it into a shell: plain words as they are, others in '...'.
quoted() {
  local arg out=()
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@+-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${out[*]}"
}

# Print a command; run it unless --dry-run.
run() {
  if [[ "$DRY_RUN" -eq 1 ]]; then
    printf '   [dry-run] %s\n' "$(quoted "$@")"
  else
    printf '   + %s\n' "$(quoted "$@")"
    "$@"
  fi
}

# Like run, as root (through sudo unless we are root already).
as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    run "$@"
  else
    run sudo "$@"
  fi
}

# Write CONTENT to FILE as root, only when the file does not already hold exactly that.
write_root_file() {
  local file="$1" content="$2"
  if [[ -f "$file" && "$(cat "$file")" == "$content" ]]; then
    note "$file is up to date"
    return 0
  fi
  if [[ "$DRY_RUN" -eq 1 ]]; then
    printf '   [dry-run] write %s:\n' "$file"
    printf '%s\n' "$content" | sed 's/^/       | /'
    return 0
  fi
  printf '   + write %s\n' "$file"
  if [[ "$(id -u)" -eq 0 ]]; then
    printf '%s\n' "$content" >"$file"
  else
    printf '%s\n' "$content" | sudo tee "$file" >/dev/null
  fi
}

# The packages among "$@" that dpkg does not list as installed (all of them without dpkg).
apt_missing() {
  local pkg
  for pkg in "$@"; do
    if ! command -v dpkg-query >/dev/null 2>&1 ||
      ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      printf '%s\n' "$pkg"
    fi
  done
}

# apt-get install the packages that are not installed yet (update first, once).
apt_install() {
  local missing=()
  mapfile -t missing < <(apt_missing "$@")
  if [[ ${#missing[@]} -eq 0 ]]; then
    note "installed already: $*"
    return 0
  fi
  as_root apt-get update
  as_root apt-get install -y "${missing[@]}"
}

# Add USER to GROUP when both exist and USER is not in it yet.
add_to_group() {
  local user="$1" group="$2"
  getent group "$group" >/dev/null 2>&1 || return 0
  id -u "$user" >/dev/null 2>&1 || return 0
  if id -nG "$user" | tr ' ' '\n' | grep -qx "$group"; then
    note "$user is in group $group already"
  else
    as_root usermod -aG "$group" "$user"
  fi
}

# The board's device-tree model ("Raspberry Pi 5 Model B Rev 1.0", "NVIDIA Jetson ..."), or "".
board_model() {
  { tr -d '\0' </proc/device-tree/model; } 2>/dev/null || true
}
