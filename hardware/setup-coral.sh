#!/usr/bin/env bash
# Set up a Coral Edge TPU (USB Accelerator, or M.2/Mini PCIe card) for trapcam on Debian-based
# systems (Raspberry Pi OS, Debian, Ubuntu). Run it after setup-raspberry-pi.sh.
#
# What it does (each step is skipped when already done, so running it again is safe):
#   1. looks for the Coral: USB ids 1a6e:089a / 18d1:9302, /dev/apex_* for PCIe
#   2. Coral's apt repository (packages.cloud.google.com, coral-edgetpu-stable) and its key
#   3. apt install libedgetpu1-std (the Edge TPU runtime, libedgetpu.so.1); --max: libedgetpu1-max
#   4. USB: the service user into group plugdev (libedgetpu's udev rule gives plugdev the device)
#      PCIe (--pcie): gasket-dkms (the apex driver), a udev rule for group apex, user into apex
#   5. reloads udev and checks that libedgetpu.so.1 is known to the dynamic linker
# Then set `classifier.backend: edgetpu` (and `edgetpu_device: usb` or `pci`) in the config, use a
# bundle made with `trapcam convert --edgetpu`, and check with `trapcam doctor --config FILE`.
#
# Usage: hardware/setup-coral.sh [--dry-run] [--pcie] [--max] [--user NAME]
#   --dry-run    print every command that would change the system, run none of them
#   --pcie       also set up the M.2/Mini PCIe driver (gasket-dkms) and the apex group
#   --max        libedgetpu1-max: maximum clock (faster, but the USB Accelerator gets hot)
#   --user NAME  the service user to give access to the device (default trapcam)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_NAME="setup-coral"
# shellcheck source=hardware/common.sh
. "$REPO/hardware/common.sh"

DRY_RUN=0
PCIE=0
RUNTIME="libedgetpu1-std"
SERVICE_USER="trapcam"
KEYRING="/usr/share/keyrings/coral-edgetpu-archive-keyring.gpg"
KEY_URL="https://packages.cloud.google.com/apt/doc/apt-key.gpg"
LIST_FILE="/etc/apt/sources.list.d/coral-edgetpu.list"
LIST_LINE="deb [signed-by=$KEYRING] https://packages.cloud.google.com/apt coral-edgetpu-stable main"
APEX_RULE_FILE="/etc/udev/rules.d/65-apex.rules"
APEX_RULE='SUBSYSTEM=="apex", MODE="0660", GROUP="apex"'

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --pcie) PCIE=1 ;;
    --max) RUNTIME="libedgetpu1-max" ;;
    --user) [[ $# -ge 2 ]] || die "--user needs a name"; SERVICE_USER="$2"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

# ---------------------------------------------------------------- 1. is there a Coral

step "looking for a Coral"
[[ "$DRY_RUN" -eq 1 ]] && note "dry run: nothing will be changed"
found=0
for dev in /sys/bus/usb/devices/*; do
  [[ -r "$dev/idVendor" && -r "$dev/idProduct" ]] || continue
  id="$(cat "$dev/idVendor"):$(cat "$dev/idProduct")"
  if [[ "$id" == "1a6e:089a" || "$id" == "18d1:9302" ]]; then
    note "USB Accelerator at $(basename "$dev") ($id, $(cat "$dev/speed" 2>/dev/null || echo '?') Mbit/s)"
    found=1
  fi
done
for dev in /dev/apex_*; do
  [[ -e "$dev" ]] || continue
  note "PCIe Edge TPU: $dev"
  found=1
done
if [[ "$found" -eq 0 ]]; then
  warn "no Coral found now (USB 1a6e:089a / 18d1:9302, /dev/apex_*); installing the runtime anyway"
fi

# ---------------------------------------------------------------- 2. Coral's apt repository

step "Coral apt repository"
if [[ -s "$KEYRING" ]]; then
  note "$KEYRING exists"
else
  key_tmp="<temporary file>"
  [[ "$DRY_RUN" -eq 1 ]] || key_tmp="$(mktemp)"
  run curl -fsSL -o "$key_tmp" "$KEY_URL"
  as_root gpg --dearmor --yes -o "$KEYRING" "$key_tmp"
  run rm -f "$key_tmp"
fi
write_root_file "$LIST_FILE" "$LIST_LINE"

# ---------------------------------------------------------------- 3. the Edge TPU runtime

step "Edge TPU runtime: $RUNTIME"
if [[ "$RUNTIME" == "libedgetpu1-max" ]]; then
  warn "libedgetpu1-max runs the TPU at full clock: the USB Accelerator can get hot enough to burn"
fi
if [[ -z "$(apt_missing "$RUNTIME")" ]]; then
  note "$RUNTIME is installed"
else
  # Coral's repository was just added (or changed): always refresh the package lists first.
  as_root apt-get update
  as_root apt-get install -y "$RUNTIME"
fi

# ---------------------------------------------------------------- 4. access for the service user

step "device access for '$SERVICE_USER'"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  warn "user $SERVICE_USER does not exist yet (setup-raspberry-pi.sh creates it): run this again afterwards"
fi
add_to_group "$SERVICE_USER" plugdev
if [[ "$PCIE" -eq 1 ]]; then
  apt_install gasket-dkms
  write_root_file "$APEX_RULE_FILE" "$APEX_RULE"
  if getent group apex >/dev/null 2>&1; then
    note "group apex exists"
  else
    as_root groupadd --system apex
  fi
  if [[ "$DRY_RUN" -eq 1 ]] && ! getent group apex >/dev/null 2>&1; then
    id -u "$SERVICE_USER" >/dev/null 2>&1 && run usermod -aG apex "$SERVICE_USER"
  else
    add_to_group "$SERVICE_USER" apex
  fi
  note "Raspberry Pi 5: enable the PCIe port (dtparam=pciex1) and check that gasket-dkms built for"
  note "your kernel (it has been reported to need the 4K-page kernel): hardware/README.md, Coral on PCIe"
fi

# ---------------------------------------------------------------- 5. reload and check

step "reload udev, check the runtime"
as_root udevadm control --reload-rules
as_root udevadm trigger
if [[ "$DRY_RUN" -eq 0 ]]; then
  if ldconfig -p 2>/dev/null | grep -q 'libedgetpu.so.1'; then
    note "libedgetpu.so.1 is known to the dynamic linker"
  else
    warn "libedgetpu.so.1 is not in the ldconfig cache: check 'dpkg -L $RUNTIME'"
  fi
fi
note "unplug and replug a USB Accelerator (or reboot after --pcie), then:"
note "  trapcam doctor --config /etc/trapcam/trap.yaml     # Coral section and the edgetpu benchmark"
