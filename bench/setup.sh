#!/usr/bin/env bash
# Installs the programs the benchmark drives: nginx (the peer every figure is
# compared with), wrk (the load generator) and curl (single-transfer timing),
# and the project's `bench` extra (the aiohttp proxy peer) into .venv.
# Idempotent: does nothing when all of them are there, and refreshes the apt
# lists only when something has to be installed.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv_python="$repo/.venv/bin/python"
if [ -x "$venv_python" ] && ! "$venv_python" -c 'import aiohttp' 2>/dev/null; then
    "$venv_python" -m pip install --quiet -e "$repo[bench]"
fi

needed=()
command -v nginx >/dev/null 2>&1 || needed+=(nginx-light)
command -v wrk >/dev/null 2>&1 || needed+=(wrk)
command -v curl >/dev/null 2>&1 || needed+=(curl)

if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# nginx-light is gone from recent Debian releases; plain nginx is the fallback.
if ! "${sudo[@]}" apt-get install -y -qq "${needed[@]}"; then
    needed=("${needed[@]/nginx-light/nginx}")
    "${sudo[@]}" apt-get install -y -qq "${needed[@]}"
fi
