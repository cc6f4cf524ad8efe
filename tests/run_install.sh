#!/usr/bin/env bash
# Installs a build tree into a temporary prefix and uses it as a user would:
#   run_install.sh BUILD_DIR [PYTHON3]
# a C program via pkg-config (attnc) and via a CMake project (find_package(attnc)), an AOT
# object from the installed `attnc build` linked with the installed runtime only (pkg-config
# attnc_rt and attnc::attnc_rt), the man page, and the installed Python package.
# CONSUMER_FLAGS (env) is added to the consumers' compile and link flags (sanitizer builds).
set -euo pipefail
build=$(cd "$1" && pwd)
py=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
export ATTNC_CACHE_DIR=$tmp/cache
flags=${CONSUMER_FLAGS:-}
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }
libdir=$(dirname "$(find "$prefix" -name libattnc.so -print -quit)")
for f in bin/attnc include/attn/attn.h include/attn/attn_rt.h share/man/man1/attnc.1; do
  [ -e "$prefix/$f" ] && ok "installed $f" || bad "installed $f"
done
for f in libattnc.so libattnc.a libattnc_rt.a libattnc_rt.so pkgconfig/attnc.pc pkgconfig/attnc_rt.pc \
         cmake/attnc/attncConfig.cmake cmake/attnc/attncTargets.cmake; do
  [ -e "$libdir/$f" ] && ok "installed lib/$f" || bad "installed lib/$f"
done
# no LD_LIBRARY_PATH: the documented commands must give programs that run from this prefix
unset LD_LIBRARY_PATH

"$prefix/bin/attnc" --help >/dev/null && ok "attnc --help" || bad "attnc --help"
man -l "$prefix/share/man/man1/attnc.1" >/dev/null 2>&1 || groff -man -Tutf8 "$prefix/share/man/man1/attnc.1" >/dev/null 2>&1 \
  && ok "man page renders" || bad "man page renders"

# the installed compiler writes an AOT object + header for the consumers of the runtime
mkdir -p "$tmp/aot"
"$prefix/bin/attnc" build "$here/install/installed.attn" -o "$tmp/aot/installed.o" --header "$tmp/aot/installed.h" \
  && ok "installed attnc build" || bad "installed attnc build"

# pkg-config
export PKG_CONFIG_PATH=$libdir/pkgconfig
if cc $flags -std=c17 -Wall -Werror "$here/install/consumer.c" -o "$tmp/pc_consumer" \
     $(pkg-config --cflags --libs attnc) -lm && "$tmp/pc_consumer"; then ok "pkg-config attnc consumer"
else bad "pkg-config attnc consumer"; fi
# exactly the documented command (docs/packaging.md): cc app.c x.o $(pkg-config --cflags --libs attnc_rt)
if cc $flags "$here/install/consumer_aot.c" -I"$tmp/aot" "$tmp/aot/installed.o" \
     -o "$tmp/pc_aot" $(pkg-config --cflags --libs attnc_rt) && "$tmp/pc_aot"; then ok "pkg-config attnc_rt AOT consumer"
else bad "pkg-config attnc_rt AOT consumer"; fi
# ... linked with the static runtime: no libattnc_rt.so needed at run time
if readelf -d "$tmp/pc_aot" 2>/dev/null | grep -q 'libattnc'; then bad "pkg-config attnc_rt links statically"
else ok "pkg-config attnc_rt links statically"; fi
[ "$(pkg-config --modversion attnc)" = "$("$prefix/bin/attnc" --version | awk '{print $NF}')" ] \
  && ok "pkg-config version" || bad "pkg-config version ($(pkg-config --modversion attnc))"

# CMake find_package
if cmake -S "$here/install" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="$flags" \
     -DCMAKE_EXE_LINKER_FLAGS="$flags" -DAOT_OBJECT="$tmp/aot/installed.o" -DAOT_DIR="$tmp/aot" >"$tmp/cm.log" 2>&1 \
   && cmake --build "$tmp/cm" >>"$tmp/cm.log" 2>&1; then
  "$tmp/cm/consumer" && ok "find_package attnc::attnc consumer" || bad "find_package attnc::attnc consumer"
  "$tmp/cm/consumer_aot" && ok "find_package attnc::attnc_rt AOT consumer" || bad "find_package attnc::attnc_rt AOT consumer"
else
  cat "$tmp/cm.log"
  bad "find_package consumers build"
fi

# the Python package, as installed (the library found next to it, no ATTNC_LIB)
if [ -n "$py" ]; then
  site=$prefix/lib/python3/dist-packages
  if env -u ATTNC_LIB PYTHONPATH="$site" "$py" - <<'PY'
import numpy as np, attnc
assert attnc.__file__.startswith(__import__("os").environ["PYTHONPATH"]), attnc.__file__
k = attnc.compile("attention p { heads = 2; head_dim = 8; mask = causal; }")
q = np.ones((1, 2, 3, 8), np.float32)
o = k(q, q, q)
assert o.shape == (1, 2, 3, 8) and np.allclose(o, 1), o
print("python ok")
PY
  then ok "installed Python package"; else bad "installed Python package"; fi
fi
echo "install: $pass passed, $fail failed"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
