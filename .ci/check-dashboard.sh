#!/usr/bin/env bash
# The playground dashboard in a real browser: installs Debian's Chromium when missing and
# playwright-core (pinned in tests/dashboard/package-lock.json), then runs tests/dashboard/check.mjs
# against a real playground (three node processes; the primary is killed from the page).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash .ci/lib/chromium.sh
(cd tests/dashboard && npm ci --no-audit --no-fund --silent </dev/null)
node tests/dashboard/check.mjs
