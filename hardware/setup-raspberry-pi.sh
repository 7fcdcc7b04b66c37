#!/usr/bin/env bash
# Set up a Raspberry Pi (Raspberry Pi OS Bookworm or later, 64-bit) as a trapcam trap.
#
# What it does, in order (each step is skipped when already done, so running it again is safe):
#   1. apt: python3-picamera2 python3-gpiozero python3-venv python3-pip mosquitto-clients
#      (picamera2 is tied to the OS's libcamera build, so it comes from apt, never pip)
#   2. a venv with --system-site-packages (so the venv sees apt's picamera2 and gpiozero)
#   3. pip install 'trapcam[edge]' from this checkout into the venv (no TensorFlow)
#   4. a config file (a copy of examples/light-trap.yaml unless one exists), validated
#   5. the service user, its data directory, and `trapcam install-service` (systemd units),
#      enabled but not started until you have checked the setup with `trapcam doctor`
#
# Usage: hardware/setup-raspberry-pi.sh [--dry-run] [--venv DIR] [--config FILE] [--user NAME]
#                                       [--no-service] [--start]
#   --dry-run     print every command that would change the system, run none of them
#   --venv DIR    where the venv goes (default /opt/trapcam/venv, or $TRAPCAM_VENV)
#   --config FILE the trap's config (default /etc/trapcam/trap.yaml, or $TRAPCAM_CONFIG)
#   --user NAME   the service user (default trapcam)
#   --no-service  stop after the venv and the config (no user, no systemd units)
#   --start       also start the service at the end (default: enable only)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRAPCAM_VENV:-/opt/trapcam/venv}"
CONFIG="${TRAPCAM_CONFIG:-/etc/trapcam/trap.yaml}"
SERVICE_USER="trapcam"
DRY_RUN=0
SERVICE=1
START=0
APT_PACKAGES=(python3-picamera2 python3-gpiozero python3-venv python3-pip mosquitto-clients)

SCRIPT_NAME="setup-raspberry-pi"
# shellcheck source=hardware/common.sh
. "$REPO/hardware/common.sh"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --venv) [[ $# -ge 2 ]] || die "--venv needs a directory"; VENV="$2"; shift ;;
    --config) [[ $# -ge 2 ]] || die "--config needs a file"; CONFIG="$2"; shift ;;
    --user) [[ $# -ge 2 ]] || die "--user needs a name"; SERVICE_USER="$2"; shift ;;
    --no-service) SERVICE=0 ;;
    --start) START=1 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

# ---------------------------------------------------------------- 0. where are we

step "checking the machine"
model="$(board_model)"
if [[ "$model" == Raspberry\ Pi* ]]; then
  note "board: $model"
else
  note "board: ${model:-unknown} (not a Raspberry Pi: the camera and GPIO steps may not apply)"
fi
if [[ -r /etc/os-release ]]; then
  # shellcheck disable=SC1091
  note "system: $(. /etc/os-release && printf '%s' "${PRETTY_NAME:-unknown}")"
fi
[[ -f "$REPO/pyproject.toml" ]] || die "$REPO is not a trapcam checkout (no pyproject.toml)"
note "checkout: $REPO"
[[ "$DRY_RUN" -eq 1 ]] && note "dry run: nothing will be changed"

# ---------------------------------------------------------------- 1. apt packages

step "apt packages: ${APT_PACKAGES[*]}"
apt_install "${APT_PACKAGES[@]}"

# ---------------------------------------------------------------- 2. the venv

step "venv with --system-site-packages at $VENV"
if [[ -x "$VENV/bin/python" ]]; then
  if grep -q '^include-system-site-packages = true' "$VENV/pyvenv.cfg" 2>/dev/null; then
    note "exists, reusing it"
  else
    die "$VENV exists without --system-site-packages (it cannot see apt's picamera2): remove it or use --venv"
  fi
else
  as_root mkdir -p "$(dirname "$VENV")"
  as_root python3 -m venv --system-site-packages "$VENV"
fi

# ---------------------------------------------------------------- 3. trapcam[edge]

step "pip install 'trapcam[edge]' from $REPO"
as_root "$VENV/bin/python" -m pip install --upgrade pip
as_root "$VENV/bin/python" -m pip install "${REPO}[edge]"
if [[ "$DRY_RUN" -eq 0 ]]; then
  if "$VENV/bin/python" -c 'import picamera2' 2>/dev/null; then
    note "picamera2 is visible in the venv"
  else
    note "warning: picamera2 is not importable in the venv (fine without a Pi camera)"
  fi
fi

# ---------------------------------------------------------------- 4. the config

step "config $CONFIG"
if [[ -f "$CONFIG" ]]; then
  note "exists, keeping it"
else
  as_root install -D -m 0644 "$REPO/examples/light-trap.yaml" "$CONFIG"
  note "a copy of examples/light-trap.yaml: edit model, site, schedule and mqtt before the first night"
fi
if [[ "$DRY_RUN" -eq 1 ]]; then
  run "$VENV/bin/trapcam" validate-config "$CONFIG"
else
  "$VENV/bin/trapcam" validate-config "$CONFIG"
fi

if [[ "$SERVICE" -eq 0 ]]; then
  step "done (--no-service): check the setup with $VENV/bin/trapcam doctor --config $CONFIG"
  exit 0
fi

# ---------------------------------------------------------------- 5. user, data directory, systemd

step "service user '$SERVICE_USER' and data directory"
if [[ "$DRY_RUN" -eq 1 && ! ( -x "$VENV/bin/python" && -f "$CONFIG" ) ]]; then
  data_dir="<data_dir from $CONFIG>"
  export_dir="<export directory from $CONFIG>"
else
  # The config decides where data lives; ask trapcam's own loader rather than parsing YAML here.
  dirs="$("$VENV/bin/python" - "$CONFIG" <<'PY'
import sys
from edge.config import load_config
cfg = load_config(sys.argv[1])
print(cfg.data_dir.resolve())
print(cfg.export_path.resolve())
PY
  )"
  data_dir="$(sed -n 1p <<<"$dirs")"
  export_dir="$(sed -n 2p <<<"$dirs")"
fi
if id -u "$SERVICE_USER" >/dev/null 2>&1; then
  note "user $SERVICE_USER exists"
else
  as_root useradd --system --user-group --home-dir "$data_dir" --shell /usr/sbin/nologin "$SERVICE_USER"
fi
# The camera (video), the light relay (gpio, i2c) and a Coral USB Accelerator (plugdev).
for group in video gpio i2c plugdev; do
  if [[ "$DRY_RUN" -eq 1 ]] && ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    getent group "$group" >/dev/null 2>&1 && run usermod -aG "$group" "$SERVICE_USER"
  else
    add_to_group "$SERVICE_USER" "$group"
  fi
done

as_root install -d -o "$SERVICE_USER" -g "$SERVICE_USER" "$data_dir" "$export_dir"

step "systemd units (trapcam install-service)"
as_root "$VENV/bin/trapcam" install-service --config "$CONFIG" --user "$SERVICE_USER"
as_root systemctl daemon-reload
as_root systemctl enable trapcam.service trapcam-export.timer
if [[ "$START" -eq 1 ]]; then
  as_root systemctl start trapcam.service trapcam-export.timer
fi

step "check before the first night"
if [[ "$DRY_RUN" -eq 1 ]]; then
  run "$VENV/bin/trapcam" doctor --config "$CONFIG"
else
  "$VENV/bin/trapcam" doctor --config "$CONFIG" || note "doctor says the trap would not run yet: fix the fail lines above"
fi
note "start it: sudo systemctl start trapcam.service trapcam-export.timer"
note "watch it: journalctl -u trapcam -f"
