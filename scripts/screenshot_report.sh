#!/usr/bin/env bash
# A screenshot of a search's report.html in a real browser (headless Chromium, Debian's `chromium` package:
# `apt-get install chromium`), to check the page as a person sees it.
#   scripts/screenshot_report.sh runs/demo/svd_search/report.html docs/report_screenshot.png [WIDTHxHEIGHT]
set -euo pipefail
page=$(realpath "$1"); out=$(realpath -m "$2"); size=${3:-1200x2600}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "screenshot_report: no chromium found; install Debian's chromium package" >&2; exit 2; }
profile=$(mktemp -d); trap 'rm -rf "$profile"' EXIT
# --no-sandbox: CI and this box run as root; the background-networking flags keep a closed network quiet
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
  --window-size="${size/x/,}" --screenshot="$out" "file://$page" 2>/dev/null
[ -s "$out" ] && echo "screenshot: $out"
