#!/usr/bin/env bash
# The Debian packages the tests start or check with: a real MQTT broker (mosquitto), shellcheck
# for device/install.sh, systemd-analyze for the unit, openssl for the TLS broker's certificates,
# headless Chromium and its driver for the explain report's browser test. Installed only where
# missing, as root or through passwordless sudo; otherwise one line says what to install by hand.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # a throw-away CA for the mqtts:// test
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the explain report, in a real browser
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "system-packages: please install ${need[*]} (apt-get install ${need[*]})" >&2
  exit 1
fi
echo "system-packages: installing ${need[*]}"
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"
