#!/usr/bin/env bash
# Installs the Debian packages mediaproxy needs, only those missing, only when root.
#   scripts/system-deps.sh run    libmagic (python-magic's C library), python3-venv and ffmpeg
#                                 (make generates the seeking sample clip with it, once)
#   scripts/system-deps.sh test   the above plus the real clients the tests drive: curl, ffprobe,
#                                 the PostgreSQL server the csv_export tests start, openssl
#                                 (test certificates), headless chromium (the status page) and
#                                 the Redis server the shared-state tests start
set -euo pipefail

want=(libmagic1)
python3 -c 'import ensurepip, venv' 2>/dev/null || want+=(python3-venv)
command -v ffmpeg >/dev/null || want+=(ffmpeg)
if [ "${1:-run}" = test ]; then
  command -v curl >/dev/null || want+=(curl)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || want+=(postgresql)
  command -v openssl >/dev/null || want+=(openssl)
  command -v chromium >/dev/null || want+=(chromium)
  command -v redis-server >/dev/null || want+=(redis-server)
fi

missing=()
for package in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "mediaproxy needs these Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
