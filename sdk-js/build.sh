#!/bin/sh
# Builds a JavaScript Weft filter into a component:
#
#   sdk-js/build.sh APP_DIR ENTRY.js OUT.wasm
#
# ENTRY.js (in APP_DIR) exports `hooks = exportFilter(YourFilter)` and imports the SDK as
# "./weft.js": APP_DIR's .js files and sdk-js/weft.js are staged into one folder, which
# componentize-js bundles into a SpiderMonkey component for `weft:filter@0.2.2` (WIT_DIR,
# default: the repository's `wit/`).
#
# First use installs componentize-js (pinned by package-lock.json: 0.23.0, with jco 1.35.0)
# with `npm ci` into TOOLCHAIN_DIR (default: target/polyglot next to this folder); later
# builds reuse it. A build whose inputs are older than OUT.wasm does nothing.
set -eu

[ $# -eq 3 ] || { echo "usage: $0 APP_DIR ENTRY.js OUT.wasm" >&2; exit 2; }
app=$(cd "$1" && pwd)
entry=$2
out=$3
sdk=$(cd "$(dirname "$0")" && pwd)
wit=${WIT_DIR:-$sdk/../wit}
tools=${TOOLCHAIN_DIR:-$sdk/../target/polyglot}
js=$tools/js

# The install is keyed on package-lock.json: a new pin reinstalls.
if ! cmp -s "$sdk/package-lock.json" "$js/package-lock.json" 2>/dev/null \
        || [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
    echo "installing componentize-js into $js (first use)" >&2
    rm -rf "$js"
    mkdir -p "$js"
    cp "$sdk/package.json" "$sdk/package-lock.json" "$js/"
    (cd "$js" && npm ci --silent --no-audit --no-fund)
fi

if [ -f "$out" ] && [ -z "$(find "$app" "$sdk/weft.js" "$wit" "$js/package-lock.json" -newer "$out" \
        \( -name '*.js' -o -name '*.wit' -o -name package-lock.json \) -print -quit)" ]; then
    exit 0
fi
stage=$(mktemp -d "${TMPDIR:-/tmp}/weft-js.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp "$app"/*.js "$stage/"
cp "$sdk/weft.js" "$stage/weft.js"
mkdir -p "$(dirname "$out")"
# `http` and `fetch-event` would import wasi:http, which a filter has no use for (its
# HTTP is `callout`) and the host does not provide.
"$js/node_modules/.bin/componentize-js" "$stage/$entry" -w "$wit" -n filter -d http fetch-event -o "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
echo "built $out" >&2
