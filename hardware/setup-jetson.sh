#!/usr/bin/env bash
# Set up an NVIDIA Jetson (Orin Nano and other Orin modules, JetPack 6 recommended) for trapcam with
# the TensorRT backend.
#
# What it does (each step is skipped when already done, so running it again is safe):
#   1. checks JetPack: /etc/nv_tegra_release (L4T release), the nvidia-jetpack package, the power mode
#   2. apt: python3-venv python3-pip mosquitto-clients, and python3-libnvinfer (TensorRT's Python
#      bindings, part of JetPack) when `import tensorrt` fails
#   3. a venv with --system-site-packages, so the venv sees JetPack's tensorrt bindings
#   4. pip install 'trapcam[edge]' from this checkout into the venv (no TensorFlow)
#   5. checks that tensorrt imports in the venv and says what to do next
# TensorRT can also run through onnxruntime's TensorRT execution provider: the onnxruntime-gpu
# wheels on PyPI are built for desktop CUDA, not for Jetson; use NVIDIA's Jetson builds for your
# JetPack (see hardware/README.md) or keep to the tensorrt bindings above.
#
# Usage: hardware/setup-jetson.sh [--dry-run] [--venv DIR]
#   --dry-run   print every command that would change the system, run none of them
#   --venv DIR  where the venv goes (default /opt/trapcam/venv, or $TRAPCAM_VENV)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_NAME="setup-jetson"
# shellcheck source=hardware/common.sh
. "$REPO/hardware/common.sh"

DRY_RUN=0
VENV="${TRAPCAM_VENV:-/opt/trapcam/venv}"
TEGRA_RELEASE="/etc/nv_tegra_release"
APT_PACKAGES=(python3-venv python3-pip mosquitto-clients)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --venv) [[ $# -ge 2 ]] || die "--venv needs a directory"; VENV="$2"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

# ---------------------------------------------------------------- 1. JetPack

step "checking JetPack"
[[ "$DRY_RUN" -eq 1 ]] && note "dry run: nothing will be changed"
if [[ -r "$TEGRA_RELEASE" ]]; then
  note "L4T: $(head -n 1 "$TEGRA_RELEASE")"
  note "board: $(board_model)"
else
  msg="not a Jetson: no $TEGRA_RELEASE (flash JetPack with NVIDIA's SDK Manager or SD-card image first)"
  [[ "$DRY_RUN" -eq 1 ]] || die "$msg"
  warn "$msg"
fi
jetpack="$(dpkg-query -W -f='${Version}' nvidia-jetpack 2>/dev/null || true)"
if [[ -n "$jetpack" ]]; then
  note "nvidia-jetpack $jetpack"
else
  warn "the nvidia-jetpack package is not installed: TensorRT may be missing (sudo apt install nvidia-jetpack)"
fi
if command -v nvpmodel >/dev/null 2>&1; then
  note "power mode: $(nvpmodel -q 2>/dev/null | head -n 1 || echo unknown) (a lower mode saves power in the field)"
fi

# ---------------------------------------------------------------- 2. apt packages

step "apt packages"
apt_install "${APT_PACKAGES[@]}"
if python3 -c 'import tensorrt' 2>/dev/null; then
  note "tensorrt imports in the system Python: $(python3 -c 'import tensorrt; print(tensorrt.__version__)')"
else
  apt_install python3-libnvinfer
fi

# ---------------------------------------------------------------- 3. the venv

step "venv with --system-site-packages at $VENV"
if [[ -x "$VENV/bin/python" ]]; then
  if grep -q '^include-system-site-packages = true' "$VENV/pyvenv.cfg" 2>/dev/null; then
    note "exists, reusing it"
  else
    die "$VENV exists without --system-site-packages (it cannot see JetPack's tensorrt): remove it or use --venv"
  fi
else
  as_root mkdir -p "$(dirname "$VENV")"
  as_root python3 -m venv --system-site-packages "$VENV"
fi

# ---------------------------------------------------------------- 4. trapcam[edge]

step "pip install 'trapcam[edge]' from $REPO"
as_root "$VENV/bin/python" -m pip install --upgrade pip
as_root "$VENV/bin/python" -m pip install "${REPO}[edge]"

# ---------------------------------------------------------------- 5. check

step "check"
if [[ "$DRY_RUN" -eq 0 ]]; then
  if "$VENV/bin/python" -c 'import tensorrt' 2>/dev/null; then
    note "tensorrt imports in the venv"
  else
    warn "tensorrt does not import in the venv: check 'dpkg -l | grep nvinfer' and the Python version"
  fi
fi
note "next: set classifier.backend: tensorrt in the config (the bundle needs model.onnx from"
note "'trapcam convert'); the first start builds the engine (minutes) and caches it by sha256, then:"
note "  $VENV/bin/trapcam doctor --config /etc/trapcam/trap.yaml"
note "  sudo $VENV/bin/trapcam install-service --config /etc/trapcam/trap.yaml   (see edge/systemd/README.md)"
