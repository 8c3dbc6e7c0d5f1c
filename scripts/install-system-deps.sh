#!/usr/bin/env bash
# Debian packages the demo and the test suite use. Installs only what is missing.
#   openssh-server/client: the local "training server" and scp for the benchmark
#   postgresql: the store tests also run against a real PostgreSQL server; the Celery stack's metadata DB
#   redis-server: the Celery stack's broker
#   chromium + chromium-driver: the UI browser test
#   default-jre-headless: the Spark Thrift Server (embedded HiveServer2) runs on the JVM
#   procps: pgrep/pkill used by the fault tests
set -euo pipefail
packages=(openssh-server openssh-client postgresql redis-server chromium chromium-driver procps sqlite3)
command -v java >/dev/null 2>&1 || packages+=(default-jre-headless)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo -n"
fi
echo "installing Debian packages: ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
