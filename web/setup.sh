#!/usr/bin/env bash
# Installs the browser avatar's npm packages (three.js, served to the page; playwright-core, which drives Debian's
# chromium in tests/test_web_avatar.py) into web/node_modules from package-lock.json. Idempotent: does nothing when
# node_modules was installed from the current lock file. NPM overrides the npm binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
npm="${NPM:-npm}"
stamp="$here/node_modules/.package-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$here/node_modules/three/build/three.module.js" ]]; then
    echo "web: node_modules is up to date"
    exit 0
fi
if ! command -v "$npm" >/dev/null; then
    echo "web: npm not found; install Node.js 18+ (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
echo "web: npm ci in $here"
(cd "$here" && "$npm" ci --no-audit --no-fund --loglevel=error)
echo "$want" > "$stamp"
