#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium is installed (the dashboard's browser test drives it
# through Playwright). Idempotent; never prompts (CI=true has no stdin).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq </dev/null
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends chromium </dev/null
command -v chromium >/dev/null
