#!/usr/bin/env bash
# Install the edgecls device runtime on a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit) or a
# Jetson (JetPack 6): a venv with numpy, OpenCV, LiteRT and ONNX Runtime. No TensorFlow.
# Run it as your normal user; it calls sudo for apt and the service.
#
#   bash device/install.sh [options]
#
#   --venv DIR              the venv (default ~/edgecls-venv, or $EDGECLS_VENV)
#   --system-site-packages  let the venv see the system's python3-picamera2 (Pi camera modules)
#                           and GStreamer-enabled OpenCV (Debian's, or JetPack's on a Jetson);
#                           pip's OpenCV is then not installed and numpy stays below 2, the
#                           numpy those system packages were built for
#   --ort-wheel FILE.whl    install this onnxruntime / onnxruntime-gpu wheel (any board)
#   --jetson-index URL      NVIDIA's Jetson wheel index for onnxruntime-gpu on a Jetson
#                           (default https://pypi.jetson-ai-lab.io/jp6/cu126: JetPack 6, CUDA 12.6)
#   --cpu-only              on a Jetson, keep PyPI's CPU onnxruntime
#   --no-apt                no apt-get (no sudo here, or packages managed otherwise)
#   --board pi|jetson|generic   skip board detection
#   --service BUNDLE_DIR    also install and start the systemd service for this bundle
#   --source SPEC           the service's camera (default 0; picamera2 for a camera module)
#   --print-unit            print the systemd unit as --service would install it, and exit
#   --print-config          print the settings file --service would write, and exit
#   -h, --help              this text
#
# Exit status: 0 done, 1 a step failed (its error is above), 2 a bad option.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
venv="${EDGECLS_VENV:-$HOME/edgecls-venv}"
jetson_index="https://pypi.jetson-ai-lab.io/jp6/cu126"
ort_wheel=""
service_bundle=""
service_source="0"
system_site=0
cpu_only=0
use_apt=1
print_unit=0
print_config=0
board=""
config=/etc/edgecls/device.yaml
unit=/etc/systemd/system/edgecls.service
groups_wanted=(video render gpio)

say() { echo "edgecls: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
usage_error() { echo "install.sh: $* (see --help)" >&2; exit 2; }
trap 'echo "install.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

need_value() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then usage_error "$1 needs a value"; fi
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --venv) need_value "$@"; venv="$2"; shift 2 ;;
      --ort-wheel) need_value "$@"; ort_wheel="$2"; shift 2 ;;
      --jetson-index) need_value "$@"; jetson_index="$2"; shift 2 ;;
      --service) need_value "$@"; service_bundle="$2"; shift 2 ;;
      --source) need_value "$@"; service_source="$2"; shift 2 ;;
      --board) need_value "$@"; board="$2"; shift 2 ;;
      --system-site-packages) system_site=1; shift ;;
      --cpu-only) cpu_only=1; shift ;;
      --no-apt) use_apt=0; shift ;;
      --print-unit) print_unit=1; shift ;;
      --print-config) print_config=1; shift ;;
      -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) usage_error "unknown option $1" ;;
    esac
  done
  case "$board" in
    ""|pi|jetson|generic) ;;
    *) usage_error "--board $board: expected pi, jetson or generic" ;;
  esac
  if [ -n "$ort_wheel" ] && [ ! -f "$ort_wheel" ]; then
    usage_error "--ort-wheel $ort_wheel: no such file"
  fi
  if [ -n "$service_bundle" ] && [ ! -f "$service_bundle/manifest.json" ]; then
    usage_error "--service $service_bundle: not a bundle folder (no manifest.json); export one first"
  fi
}

detect_board() {
  [ -n "$board" ] && return
  board="generic"
  if [ -f /etc/nv_tegra_release ] || grep -qi jetson /proc/device-tree/model 2>/dev/null; then
    board="jetson"
  elif grep -qi "raspberry pi" /proc/device-tree/model 2>/dev/null; then
    board="pi"
  fi
}

# LiteRT (ai-edge-litert) and ONNX Runtime publish wheels for aarch64 and x86_64 only.
check_architecture() {
  local machine
  machine="$(uname -m)"
  case "$machine" in
    aarch64|arm64|x86_64) ;;
    armv6l|armv7l|armhf|arm)
      die "this is 32-bit ARM ($machine): neither LiteRT (ai-edge-litert) nor ONNX Runtime publish wheels for 32-bit ARM, so the device runtime cannot be installed. Flash Raspberry Pi OS (64-bit) Bookworm and run this again" ;;
    *)
      die "unsupported architecture $machine: the device runtimes have wheels for aarch64 and x86_64 only" ;;
  esac
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "'$*' needs root: run it with sudo available, or pass --no-apt and install the packages yourself"
  fi
}

apt_packages() {
  local pkgs=(python3-venv python3-pip v4l-utils)
  if [ "$system_site" -eq 1 ]; then
    pkgs+=(python3-numpy gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
    case "$board" in
      pi) pkgs+=(python3-opencv python3-picamera2 gstreamer1.0-libcamera python3-lgpio) ;;
      jetson) pkgs+=(nvidia-opencv) ;;  # JetPack's OpenCV, built with GStreamer and CUDA
      *) pkgs+=(python3-opencv) ;;
    esac
  fi
  printf '%s\n' "${pkgs[@]}"
}

install_apt() {
  if [ "$use_apt" -eq 0 ]; then
    say "--no-apt: skipping apt-get; needed: $(apt_packages | tr '\n' ' ')"
    return
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install $(apt_packages | tr '\n' ' ')yourself and rerun with --no-apt"
  local pkgs
  mapfile -t pkgs < <(apt_packages)
  say "apt-get update"
  as_root apt-get update
  say "apt-get install ${pkgs[*]}"
  # --no-install-recommends keeps python3-picamera2 from pulling a desktop (Qt, OpenGL).
  as_root apt-get install -y --no-install-recommends "${pkgs[@]}"
}

find_python() {
  py="$(command -v python3 || true)"
  [ -n "$py" ] || die "python3 not found: sudo apt install python3 python3-venv"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "Python 3.10+ is required; $py is $("$py" -V 2>&1)"
  [ "$("$py" -c 'import struct; print(struct.calcsize("P") * 8)')" = 64 ] \
    || die "$py is a 32-bit Python on a 64-bit kernel (32-bit userland): LiteRT and ONNX Runtime have no wheels for it. Flash Raspberry Pi OS (64-bit) and run this again"
  "$py" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$py cannot make a venv (ensurepip missing): sudo apt install python3-venv, or drop --no-apt"
}

make_venv() {
  local flags=()
  [ "$system_site" -eq 1 ] && flags+=(--system-site-packages)
  say "venv $venv ${flags[*]}"
  "$py" -m venv "${flags[@]}" "$venv"
  pip=("$venv/bin/python" -m pip)
  "${pip[@]}" install --upgrade pip
}

# Which onnxruntime the board gets: a given wheel, NVIDIA's Jetson build, or PyPI's.
ort_source() {
  if [ -n "$ort_wheel" ]; then echo wheel
  elif [ "$board" = jetson ] && [ "$cpu_only" -eq 0 ]; then echo jetson
  else echo pypi
  fi
}

install_python_packages() {
  local tmp skip="#" ort left_out pins
  tmp="$(mktemp -d)"
  ort="$(ort_source)"
  # System OpenCV and NVIDIA's onnxruntime-gpu are built against numpy 1.x.
  if [ "$system_site" -eq 1 ] || [ "$ort" = jetson ]; then echo "numpy<2" >"$tmp/constraints.txt"; else : >"$tmp/constraints.txt"; fi
  [ "$system_site" -eq 1 ] && skip="$skip|opencv"
  [ "$ort" != pypi ] && skip="$skip|onnxruntime"
  grep -v -E "^($skip)" "$here/requirements.txt" >"$tmp/requirements.txt"
  left_out="${skip#\#}"
  left_out="${left_out#|}"
  pins="$(cat "$tmp/constraints.txt")"
  say "pip install -r requirements.txt${left_out:+, leaving out ${left_out//|/ }}${pins:+, with $pins}"
  "${pip[@]}" install -r "$tmp/requirements.txt" -c "$tmp/constraints.txt"
  case "$ort" in
    wheel)
      "${pip[@]}" uninstall -y onnxruntime onnxruntime-gpu
      "${pip[@]}" install -c "$tmp/constraints.txt" "$ort_wheel" ;;
    jetson)
      say "onnxruntime-gpu from NVIDIA's Jetson index $jetson_index"
      "${pip[@]}" install --extra-index-url "$jetson_index" -c "$tmp/constraints.txt" onnxruntime-gpu \
        || die "onnxruntime-gpu could not be installed from $jetson_index: give the index for your JetPack with --jetson-index URL, a wheel with --ort-wheel FILE, or --cpu-only" ;;
  esac
  rm -rf "$tmp"
  # --no-deps: the package's own dependencies are the lines above (pip's OpenCV would shadow the
  # system's GStreamer-enabled one).
  "${pip[@]}" install --no-deps "$repo"
}

check_install() {
  "$venv/bin/python" -c 'import numpy, cv2, onnxruntime' \
    || die "the venv cannot import numpy, cv2 and onnxruntime (see above); edgecls doctor says more"
  if [ "$system_site" -eq 1 ] && [ "$board" = pi ]; then
    "$venv/bin/python" -c 'import picamera2' || die "the venv cannot import picamera2 (see above)"
  fi
  "$venv/bin/edgecls" doctor
}

service_user() { echo "${SUDO_USER:-$(id -un)}"; }

supplementary_groups() {
  local g found=()
  for g in "${groups_wanted[@]}"; do
    getent group "$g" >/dev/null && found+=("$g")
  done
  echo "${found[*]}"
}

# Devices the unit lets through: cameras and GPIO everywhere; a Jetson's GPU nodes have no stable
# class names, so there the device filter is lifted (the rest of the sandbox stays).
device_lines() {
  if [ "$board" = jetson ]; then
    echo "# Jetson: CUDA and TensorRT need the nvhost/nvmap/nvgpu nodes."
    echo "DevicePolicy=auto"
    echo "DeviceAllow="
  fi
}

render_unit() {
  local line user group groups
  user="$(service_user)"
  group="$(id -gn "$user")"
  groups="$(supplementary_groups)"
  while IFS= read -r line || [ -n "$line" ]; do
    if [ "$line" = "@DEVICES@" ]; then
      device_lines
      continue
    fi
    line="${line//@VENV@/$venv}"
    line="${line//@REPO@/$repo}"
    line="${line//@USER@/$user}"
    line="${line//@GROUP@/$group}"
    line="${line//@GROUPS@/$groups}"
    printf '%s\n' "$line"
  done <"$here/edgecls.service"
}

# The service's settings: the shipped example with this bundle and source.
config_text() {
  echo "# edgecls run --config $config: every 'edgecls run' option is a key. Written by install.sh."
  echo "bundle: $(realpath "$service_bundle")"
  echo "source: '${service_source//\'/\'\'}'"  # YAML single quotes: pipelines hold : and "
  if [ -f "$here/device.yaml" ]; then
    grep -v -E '^(bundle|source):' "$here/device.yaml"
  else
    printf '%s\n' "headless: true" "log_file: /var/log/edgecls/records.jsonl"
  fi
}

# Written once: an existing file is the user's and is never overwritten.
write_config() {
  local tmp
  if as_root test -e "$config"; then
    say "keeping $config as it is (its bundle: and source: stay; edit it to change them)"
    return
  fi
  tmp="$(mktemp)"
  config_text >"$tmp"
  as_root install -D -m 0640 -o root -g "$(id -gn "$(service_user)")" "$tmp" "$config"
  rm -f "$tmp"
  say "wrote $config"
}

install_service() {
  local tmp
  command -v systemctl >/dev/null || die "systemctl not found: the service needs systemd"
  write_config
  tmp="$(mktemp -d)"
  render_unit >"$tmp/edgecls.service"
  if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$tmp/edgecls.service"
  fi
  as_root install -m 0644 "$tmp/edgecls.service" "$unit"
  rm -rf "$tmp"
  as_root systemctl daemon-reload
  as_root systemctl enable edgecls.service
  as_root systemctl restart edgecls.service
  say "service started: systemctl status edgecls; journalctl -u edgecls -f"
}

main() {
  parse_args "$@"
  detect_board
  if [ "$print_unit" -eq 1 ]; then
    render_unit
    exit 0
  fi
  if [ "$print_config" -eq 1 ]; then
    [ -n "$service_bundle" ] || usage_error "--print-config needs --service BUNDLE_DIR"
    config_text
    exit 0
  fi
  check_architecture
  if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ]; then
    die "run this as your normal user ($SUDO_USER), not with sudo: it calls sudo itself, and the venv and service belong to that user"
  fi
  say "installing for $board ($(uname -m)) into $venv"
  install_apt
  find_python
  make_venv
  install_python_packages
  check_install
  [ -n "$service_bundle" ] && install_service
  say "done. Try: $venv/bin/edgecls run BUNDLE --source 0 --headless --json"
}

main "$@"
