#!/usr/bin/env bash
# Install the edgecls device runtime on a Raspberry Pi (Raspberry Pi OS Bookworm) or a Jetson
# (JetPack 6 / L4T): a venv with numpy, OpenCV, LiteRT and ONNX Runtime. No TensorFlow.
#
#   bash device/install.sh [--venv DIR] [--ort-wheel PATH.whl] [--service BUNDLE_DIR]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
venv="${EDGECLS_VENV:-$HOME/edgecls-venv}"
ort_wheel=""
service_bundle=""
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --ort-wheel) ort_wheel="$2"; shift 2 ;;
    --service) service_bundle="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

board="generic Linux"
if [ -f /etc/nv_tegra_release ] || grep -qi jetson /proc/device-tree/model 2>/dev/null; then
  board="jetson"
elif grep -qi "raspberry pi" /proc/device-tree/model 2>/dev/null; then
  board="raspberry-pi"
fi
echo "edgecls: installing for $board ($(uname -m)) into $venv"

py="$(command -v python3 || true)"
[ -n "$py" ] || { echo "install.sh: python3 not found; install python3 and python3-venv" >&2; exit 1; }
"$py" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
  || { echo "install.sh: Python 3.10+ is required" >&2; exit 1; }
if ! "$py" -m venv --help >/dev/null 2>&1; then
  echo "install.sh: python3-venv is missing: sudo apt install python3-venv" >&2; exit 1
fi

# System packages that OpenCV and cameras need; skipped without sudo rights.
if command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get install -y --no-install-recommends python3-venv libgl1 v4l-utils >/dev/null || true
fi

"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$here/requirements.txt"

if [ "$board" = "jetson" ]; then
  # JetPack's onnxruntime-gpu brings the CUDA and TensorRT execution providers.
  if [ -z "$ort_wheel" ]; then
    ort_wheel="$(ls "$here"/onnxruntime_gpu-*.whl "$HOME"/onnxruntime_gpu-*.whl 2>/dev/null | head -n 1 || true)"
  fi
  if [ -n "$ort_wheel" ]; then
    "$venv/bin/python" -m pip uninstall -q -y onnxruntime || true
    "$venv/bin/python" -m pip install -q "$ort_wheel"
  else
    echo "edgecls: no onnxruntime-gpu wheel found; ONNX runs on the CPU. Download the JetPack"
    echo "         wheel for your JetPack version and rerun with --ort-wheel PATH.whl"
  fi
fi

"$venv/bin/python" -m pip install -q --no-deps "$repo"
"$venv/bin/edgecls" doctor

if [ -n "$service_bundle" ]; then
  unit=/etc/systemd/system/edgecls.service
  sed -e "s#@VENV@#$venv#g" -e "s#@BUNDLE@#$(realpath "$service_bundle")#g" -e "s#@USER@#$(id -un)#g" \
    "$here/edgecls.service" | sudo tee "$unit" >/dev/null
  sudo systemctl daemon-reload
  sudo systemctl enable --now edgecls.service
  echo "edgecls: service started; follow it with: journalctl -u edgecls -f"
fi
echo "edgecls: done. Try: $venv/bin/edgecls run BUNDLE --source 0 --headless --json"
