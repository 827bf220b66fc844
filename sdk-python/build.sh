#!/bin/sh
# Builds a Python Weft filter into a component:
#
#   sdk-python/build.sh APP_DIR MODULE OUT.wasm
#
# APP_DIR holds MODULE.py, which defines `Hooks = weft.export(YourFilter)`. The component
# targets `weft:filter@0.2.2` (WIT_DIR, default: the repository's `wit/`).
#
# First use installs componentize-py (the version pinned in requirements.txt, 0.25.1) into
# a venv under TOOLCHAIN_DIR (default: target/polyglot next to this folder); later builds
# reuse it. A build whose inputs are older than OUT.wasm does nothing.
set -eu

[ $# -eq 3 ] || { echo "usage: $0 APP_DIR MODULE OUT.wasm" >&2; exit 2; }
app=$(cd "$1" && pwd)
module=$2
out=$3
sdk=$(cd "$(dirname "$0")" && pwd)
wit=${WIT_DIR:-$sdk/../wit}
tools=${TOOLCHAIN_DIR:-$sdk/../target/polyglot}
venv=$tools/python

# The venv is keyed on requirements.txt: a new pin reinstalls.
if ! cmp -s "$sdk/requirements.txt" "$venv/requirements.txt" 2>/dev/null; then
    echo "installing componentize-py into $venv (first use)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$sdk/requirements.txt"
    cp "$sdk/requirements.txt" "$venv/requirements.txt"
fi

if [ -f "$out" ] && [ -z "$(find "$app" "$sdk/weft.py" "$wit" "$venv/requirements.txt" -newer "$out" \
        \( -name '*.py' -o -name '*.wit' -o -name requirements.txt \) -print -quit)" ]; then
    exit 0
fi
mkdir -p "$(dirname "$out")"
"$venv/bin/componentize-py" -d "$wit" -w filter componentize -p "$sdk" -p "$app" "$module" -o "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
echo "built $out" >&2
