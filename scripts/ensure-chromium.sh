#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (Playwright's own browser download cannot work
# here). Install it when it is missing; under CI=true a machine without it is a failure.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
echo "ensure-chromium: installing Debian's chromium for the browser tests" >&2
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }
fi
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "${CI:-}" = "true" ]; then
  echo "ensure-chromium: no Chromium and it could not be installed; CI needs it" >&2
  exit 1
fi
echo "ensure-chromium: no Chromium; the browser tests will be skipped" >&2
