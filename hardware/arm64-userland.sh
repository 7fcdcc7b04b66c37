#!/bin/sh
# A Raspberry Pi's own userland, tried on this x86 machine: Debian bookworm arm64 (the base of
# Raspberry Pi OS) built with debootstrap and run under qemu-user; the trap's install path
# (`pip install -e '.[edge]'`, no TensorFlow) in it, the demo's night and a night of real frames with
# a real classifier replayed there and here, and the counts compared. Exit 0 only when they agree.
#
#   sh hardware/arm64-userland.sh [DEMO_DIR]       (as root: debootstrap, chroot and binfmt need it)
#
# DEMO_DIR: a folder `trapcam demo` wrote (default trapcam-data/demo, where the README's first command
# leaves it); its model bundle and night are evaluated on both sides. The real night is the flower
# camera's frames with the iNaturalist model from ../shared/data (bench/real_counts.py); without
# ../shared that part is left out and said so. debootstrap, qemu-user-static and binfmt-support are
# installed with apt-get where missing. The arm64 root is kept in TRAPCAM_ARM64_ROOT (default
# /var/cache/trapcam/arm64-bookworm) and reused by the next run; TRAPCAM_X86_PYTHON is the python
# with trapcam installed on this side (default .venv/bin/python, else .venv-dev/bin/python).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
demo_dir=$(cd "$repo" && realpath -m "${1:-trapcam-data/demo}")
root=${TRAPCAM_ARM64_ROOT:-/var/cache/trapcam/arm64-bookworm}
mirror=${TRAPCAM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
shared=$(realpath -m "$repo/../shared")
started=$(date +%s)

say() { printf 'arm64: %s\n' "$*"; }
fail() {
  printf 'arm64-userland.sh: %s\n' "$*" >&2
  exit 1
}
elapsed() { echo "$(($(date +%s) - started)) s"; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, chroot, binfmt_misc); run it with sudo"
[ "$(uname -m)" = x86_64 ] || fail "runs on x86_64 (this is $(uname -m)); on a Pi, install trapcam directly"
[ -f "$demo_dir/trap.yaml" ] && [ -d "$demo_dir/bundle" ] ||
  fail "$demo_dir: no demo output (trap.yaml, bundle/); run 'trapcam demo' first or name its folder"

x86_python=${TRAPCAM_X86_PYTHON:-}
if [ -z "$x86_python" ]; then
  for candidate in "$repo/.venv/bin/python" "$repo/.venv-dev/bin/python"; do
    if [ -x "$candidate" ]; then
      x86_python=$candidate
      break
    fi
  done
fi
[ -n "$x86_python" ] || fail "no python with trapcam on this side (.venv or .venv-dev); set TRAPCAM_X86_PYTHON"

# ---------------------------------------------------------------- the host's tools
need=""
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
[ -x /usr/bin/qemu-aarch64-static ] || need="$need qemu-user-static"
command -v update-binfmts >/dev/null 2>&1 || need="$need binfmt-support"
if [ -n "$need" ]; then
  command -v apt-get >/dev/null 2>&1 || fail "please install:$need"
  say "installing with apt-get:$need"
  # shellcheck disable=SC2086  # a list of package names
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || fail "cannot mount binfmt_misc"
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
  fail "qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable qemu-aarch64)"

# ---------------------------------------------------------------- the arm64 root, built once
# a run that was killed may have left its mounts (the checkout among them): never delete through one
awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
if awk -v r="$root/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
  fail "$root still has mounts inside it (see /proc/mounts); unmount them first"
fi
if [ ! -f "$root/.trapcam-root-ready" ]; then
  say "building Debian bookworm arm64 in $root (debootstrap from $mirror; a few minutes)"
  rm -rf "$root"
  mkdir -p "$root"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    fail "debootstrap failed; the last lines of $root.debootstrap.log: $(tail -3 "$root.debootstrap.log" | tr '\n' ' ')"
  touch "$root/.trapcam-root-ready"
  say "root built after $(elapsed)"
fi

# The checkout, the demo's folder and ../shared appear inside at the paths they have here, so the
# demo's trap.yaml (absolute paths) and bench/real_counts.py (../shared) work unchanged.
mounted=""
work=""
# shellcheck disable=SC2329  # called by the trap below
cleanup() {
  for m in $mounted; do umount -l "$m" 2>/dev/null || true; done
  if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM
bind() { # bind SOURCE [ro]: the folder at the same path inside the root
  mkdir -p "$root$1"
  mount --bind "$1" "$root$1"
  mounted="$root$1 $mounted"
  if [ "${2:-}" = ro ]; then mount -o remount,bind,ro "$root$1"; fi
}
# No /sys: under qemu-user it would describe the x86 host, and XNNPACK's cpuinfo crashes on that
# (without it, cpuinfo says on stderr that it cannot read the CPU list and goes on).
mkdir -p "$root/proc" "$root/dev"
mount -t proc proc "$root/proc" && mounted="$root/proc $mounted"
bind /dev
cp /etc/resolv.conf "$root/etc/resolv.conf"
# pip inside trusts what this machine trusts (a company proxy's certificate, say) and uses its proxy
host_ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$host_ca" ]; then cp "$host_ca" "$root/etc/ssl/certs/host-ca-certificates.crt"; fi
bind "$repo"
case "$demo_dir" in "$repo"/*) ;; *) bind "$demo_dir" ;; esac
if [ -d "$shared/data" ]; then bind "$shared" ro; fi
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt PIP_DEFAULT_TIMEOUT=180 \
    http_proxy="${http_proxy:-}" https_proxy="${https_proxy:-}" no_proxy="${no_proxy:-}" "$@"
}

# shellcheck disable=SC2016  # expanded inside the root, not here
say "$(in_root /bin/sh -c '. /etc/os-release; echo "$PRETTY_NAME"'), $(in_root uname -m) under $(/usr/bin/qemu-aarch64-static --version | head -1)"

work=$(mktemp -d /tmp/trapcam-arm64.XXXXXX)
bind "$work"

# ---------------------------------------------------------------- the trap's install path
venv=/opt/trapcam-venv
# a virtual environment of its own, outside the checkout (the checkout's .venv is x86's), with the
# versions x86 has, so that both sides run the same libraries
"$x86_python" -m pip freeze --exclude-editable 2>/dev/null | grep -v -e '^-e ' -e ' @ ' >"$work/x86-versions.txt" || true
in_root python3 -m venv "$venv"
install_started=$(date +%s)
in_root "$venv/bin/pip" install -q --disable-pip-version-check -c "$work/x86-versions.txt" -e "${repo}[edge]" \
  >"$root/pip.log" 2>&1 ||
  fail "pip install -e '.[edge]' failed in the arm64 root; the last lines: $(tail -5 "$root/pip.log" | tr '\n' ' ')"
say "pip install -e '.[edge]': $(($(date +%s) - install_started)) s, $(du -sm "$root$venv" | cut -f1) MB"
if in_root "$venv/bin/python" -c "import tensorflow" >/dev/null 2>&1; then
  fail "TensorFlow came with .[edge] on arm64; the trap must not need it"
fi
# the measurement, not the trap: `trapcam evaluate` scores tracks with motmetrics
in_root "$venv/bin/pip" install -q --disable-pip-version-check -c "$work/x86-versions.txt" -e "${repo}[edge,evaluate]" \
  >>"$root/pip.log" 2>&1 ||
  fail "pip install -e '.[edge,evaluate]' failed in the arm64 root; the last lines: $(tail -5 "$root/pip.log" | tr '\n' ' ')"

# ---------------------------------------------------------------- the same nights on both sides

# What is compared (summaries made here, by x86's python, from the files each side wrote). Must be
# the same: what the trap reports, i.e. the counts (counted, false, twice, missed), the counts per
# taxon at each level and the answers of the counted tracks. Shown when different, not a failure:
# each track's hits, the detections and MOTA. OpenCV's and numpy's SIMD kernels differ between the
# two CPUs in the last bits, so a detection the tracker finds equally close to two tracks can go to
# the other one: on the demo's full night (240 frames) the same 1,336 detections, and one of them
# joined the other of two tracks (hits 110/98 on x86, 109/99 on arm64; MOTA 0.990 and 0.989).
# The answer of a discarded one-frame track is left out too: on the flower frames one such crop
# scored just above the iNaturalist model's threshold on arm64 and just below it on x86.
summary='
import json, sqlite3, sys
from pathlib import Path
out, report, db = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
lines = []
if report.is_file():
    r = json.loads(report.read_text())
    t, d = r["tracking"], r["detection"]
    counted = (t["counted"], t["true_insects"], t["false_tracks"], t["double_counted"], t["missed"])
    lines.append(("counts", "counted %d of %d; false %d; twice %d; missed %d" % counted))
    lines.append(("detail", "detections %d, matched %d; MOTA %.3f" % (d["detections"], d["tp"], t["mota"])))
    for level, rows in r["counts_per_taxon"]["levels"].items():
        for row in rows:
            taxon = (level, row["label"], row["counted"], row["correct"])
            lines.append(("counts", "%s %s: counted %s, correct %s" % taxon))
with sqlite3.connect("file:%s?mode=ro" % db, uri=True) as conn:
    rows = conn.execute(
        "SELECT first_utc, hits, level, label, status, discard_reason FROM tracks ORDER BY first_utc, track_id"
    ).fetchall()
kept = [row for row in rows if row[4] != "discarded"]
lines += [("counts", "a track answered %s %s" % pair) for pair in sorted((str(r[2]), str(r[3])) for r in kept)]
for first, hits, level, label, status, reason in rows:
    answer = "discarded (%s)" % reason if status == "discarded" else "answer %s %s" % (level, label)
    lines.append(("detail", "track from %s, %d hits, %s" % (first, hits, answer)))
for part in ("counts", "detail"):
    text = "".join(line + "\n" for kind, line in lines if kind == part)
    Path("%s-%s.txt" % (out, part)).write_text(text)
'
status=0
compare() { # compare WHAT TITLE: x86's and arm64's summaries of WHAT (WHAT-counts.txt, WHAT-detail.txt)
  if diff -u "$work/x86-$1-counts.txt" "$work/arm64-$1-counts.txt"; then
    say "$2: the counts the same on arm64 as on x86:"
    sed 's/^/  /' "$work/arm64-$1-counts.txt"
  else
    say "$2: arm64 counts differently from x86 (above)"
    status=1
  fi
  if diff -u "$work/x86-$1-detail.txt" "$work/arm64-$1-detail.txt" >"$work/$1-detail.diff"; then
    say "$2: every track, its hits and the detections the same too"
  else
    say "$2: tracks' hits or detections differ in the last bits (not counts):"
    grep '^[-+][^-+]' "$work/$1-detail.diff" | sed 's/^/  /'
  fi
}
summarize() { # summarize SIDE WHAT REPORT DB: SIDE-WHAT-counts.txt and SIDE-WHAT-detail.txt
  "$x86_python" -c "$summary" "$work/$1-$2" "$3" "$4"
}

demo_night() { # demo_night SIDE PYTHON...: `trapcam evaluate` on the demo's night with its model
  side=$1
  shift
  "$@" -m edge evaluate -c "$demo_dir/trap.yaml" "$demo_dir/night" --out "$work/$side-demo" \
    >"$work/$side-demo.log" 2>&1 ||
    fail "$side: trapcam evaluate on the demo night failed: $(tail -3 "$work/$side-demo.log" | tr '\n' ' ')"
  summarize "$side" demo "$work/$side-demo/report.json" "$work/$side-demo/evaluate.db"
}
demo_night x86 "$x86_python"
night_started=$(date +%s)
demo_night arm64 in_root "$venv/bin/python"
say "demo night ($(find "$demo_dir/night" -name '*.jpg' | wc -l) frames) on arm64: $(($(date +%s) - night_started)) s"
compare demo "demo night"

real_night() { # real_night SIDE PYTHON...: the flower camera's frames with the iNaturalist model
  side=$1
  shift
  # the same --out on both sides, so that the printed lines are comparable; moved aside after
  (cd "$repo" && "$@" -m bench.real_counts --shared "$shared" --set flower-pi --out "$work/real") \
    >"$work/$side-real.txt" 2>"$work/$side-real.err" ||
    fail "$side: bench.real_counts failed: $(tail -3 "$work/$side-real.err" | tr '\n' ' ')"
  summarize "$side" real none "$work/real/flower-pi/evaluate.db"
  cat "$work/$side-real.txt" >>"$work/$side-real-detail.txt"
  mv "$work/real" "$work/$side-real"
}
if [ -d "$shared/data" ]; then
  real_night x86 "$x86_python"
  night_started=$(date +%s)
  real_night arm64 in_root /bin/sh -c "cd '$repo' && exec '$venv/bin/python' \"\$@\"" python
  say "real flower frames with the iNaturalist model on arm64: $(($(date +%s) - night_started)) s"
  compare real "real frames"
else
  say "real frames left out: $shared/data is not there"
fi
say "done in $(elapsed)"
exit "$status"
