#!/bin/sh
# Builds target/polyglot/hello_filter_js.wasm (first use installs componentize-js 0.23.0
# into target/polyglot/js).
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../../sdk-js/build.sh" "$here" filter.js "${1:-$here/../../target/polyglot/hello_filter_js.wasm}"
