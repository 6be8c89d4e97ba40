#!/usr/bin/env bash
# Debian's chromium for the page tests (tests/test_serve_page.py drive it with Playwright): installed with
# apt-get when missing, as postgres.sh installs PostgreSQL. Playwright's own browser download is not used.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium.sh: installing chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >&2 || { apt-get update -q >&2 && apt-get install -y -q chromium >&2; }
fi
command -v chromium >/dev/null 2>&1 || { echo "chromium.sh: no chromium after installing it" >&2; exit 1; }
