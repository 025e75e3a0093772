#!/usr/bin/env bash
# Prepare the emulated Raspberry Pi: qemu-user-static, an arm64 Debian bookworm Python 3.11 root
# (cached outside the repository, built once, safe when two runs race), and the device extra's
# aarch64 wheels. Prints KEY=VALUE lines for the test stage. See ../../../shared/ARM64.md.
#
#   bash tests/arm64/prepare.sh PROJECT_WHEEL_DIR
set -euo pipefail

cache="${EDGECLS_ARM64_CACHE:-$HOME/.cache/edgecls/arm64}"
mkdir -p "$cache"
log() { echo "arm64: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# 1. tools from Debian, where missing
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  exec 8>"$cache/apt.lock"; flock 8
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
  exec 8>&-
fi

# 2. the arm64 root, built once: under a lock, in a temp folder renamed into place
root="$cache/bookworm-arm64"
if [ ! -x "$root/usr/bin/python3.11" ]; then
  exec 9>"$cache/root.lock"; flock 9
  if [ ! -x "$root/usr/bin/python3.11" ]; then
    mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
    [ -n "$mirror" ] || mirror="$(awk '/^deb .*debian/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
    [ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
    tmp="$cache/bookworm-arm64.tmp-$$"
    rm -rf "$tmp"
    log "building the arm64 root from $mirror (once)"
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-venv \
      bookworm "$tmp" "$mirror" >&2
    # the second stage would run arm64 code: unpack every package instead
    for deb in "$tmp"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$tmp"; done
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/debootstrap
    [ -x "$tmp/usr/bin/python3.11" ] || { log "no python3.11 in the root"; exit 1; }
    rm -rf "$root"
    mv "$tmp" "$root"
  fi
  exec 9>&-
fi

# 3. the device extra's aarch64 wheels, cached by requirement set
reqs="numpy opencv-python-headless ai-edge-litert onnxruntime typer rich model-signing pyopenssl"
key="$(echo "$reqs" | sha256sum | cut -c1-12)"
site="$cache/site-$key"
if [ ! -f "$site/.complete" ]; then
  exec 7>"$cache/site.lock"; flock 7
  if [ ! -f "$site/.complete" ]; then
    log "downloading aarch64 wheels: $reqs"
    rm -rf "$site.tmp"
    python3 -m pip install -q --target "$site.tmp" --only-binary=:all: --python-version 3.11 \
      --implementation cp --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
      --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 $reqs >&2
    touch "$site.tmp/.complete"
    rm -rf "$site"
    mv "$site.tmp" "$site"
  fi
  exec 7>&-
fi

# 4. one hard-linked copy of the root per emulated board, with a fake /proc/cpuinfo
#    (cpuinfo-based libraries crash on the host's x86 file); never qemu's default `max` CPU
ncpu=$(( $(cut -d- -f2 /sys/devices/system/cpu/possible) + 1 ))
for board in pi4 pi5; do
  dir="$cache/root-$board"
  if [ ! -f "$dir/proc/device-tree/model" ] || [ "$(grep -c ^processor "$dir/proc/cpuinfo")" != "$ncpu" ]; then
    exec 6>"$cache/$board.lock"; flock 6
    rm -rf "$dir.tmp"
    cp -al "$root" "$dir.tmp"
    mkdir -p "$dir.tmp/proc"
    rm -f "$dir.tmp/proc/cpuinfo"
    if [ "$board" = pi4 ]; then
      model="Raspberry Pi 4 Model B Rev 1.5"
      part=0xd08; variant=0x0; revision=3; features="fp asimd evtstrm crc32 cpuid"
    else
      model="Raspberry Pi 5 Model B Rev 1.0"
      part=0xd0b; variant=0x4; revision=1
      features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
    fi
    for ((i = 0; i < ncpu; i++)); do
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %d\n\n' \
        "$i" "$features" "$variant" "$part" "$revision" >> "$dir.tmp/proc/cpuinfo"
    done
    mkdir -p "$dir.tmp/proc/device-tree"
    printf '%s\0' "$model" > "$dir.tmp/proc/device-tree/model"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    exec 6>&-
  fi
done

# 5. the project itself, fresh every run, into its own target folder
wheels="${1:?usage: prepare.sh PROJECT_WHEEL_DIR}"
project="$wheels/site"
rm -rf "$project"
python3 -m pip install -q --no-deps --target "$project" --only-binary=:all: --python-version 3.11 \
  --implementation cp --platform manylinux2014_aarch64 "$wheels"/edgecls-*.whl >&2

echo "QEMU=$(command -v qemu-aarch64-static)"
echo "ROOT_PI4=$cache/root-pi4"
echo "ROOT_PI5=$cache/root-pi5"
echo "PYTHONPATH=$project:$site"
