#!/bin/sh
# Builds target/polyglot/hello_filter_py.wasm (first use installs componentize-py 0.25.1
# into target/polyglot/python).
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../../sdk-python/build.sh" "$here" app "${1:-$here/../../target/polyglot/hello_filter_py.wasm}"
