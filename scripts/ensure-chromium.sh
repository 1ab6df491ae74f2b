#!/usr/bin/env bash
# Makes sure Debian's chromium is at /usr/bin/chromium for the viewer's browser tests
# (tests/e2e/test_viewer_browser.py). Never downloads browsers through playwright.
# Exits 0 even when it cannot install: the browser tests then skip with the reason.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no apt-get; browser tests will be skipped" >&2; exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-chromium: not root and no sudo; browser tests will be skipped" >&2; exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2 || true
$SUDO apt-get install -y -qq chromium >&2 || echo "ensure-chromium: apt-get install chromium failed; browser tests will be skipped" >&2
exit 0
