#!/usr/bin/env bash
# `pip install .` as a user does it, offline, with Debian's packages: a fresh
#   python3 -m venv --system-site-packages (NumPy, setuptools from Debian)
# then `pip install --no-build-isolation .` from a copy of the source tree, and `import attnc`
# running a kernel from outside the tree:
#   run_pip.sh SOURCE_DIR BUILD_DIR
# The build step runs CMake on BUILD_DIR (ATTNC_CMAKE_BUILD_DIR: an up-to-date tree, so it only
# checks the library is built), then a second venv installs with ATTNC_LIB (a given library).
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ATTNC_CACHE_DIR=$tmp/cache PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset ATTNC_LIB PYTHONPATH
# the tree as a user has it: tracked files only, no build directories
mkdir "$tmp/src"
git -C "$src" ls-files -z --cached --others --exclude-standard | (cd "$src" && xargs -0 cp --parents -t "$tmp/src")
fail=0
check() { # venv-dir: import attnc from outside the tree, the library inside the package
  (cd "$tmp" && "$1/bin/python" - <<'PY'
import os, numpy as np, attnc
assert "site-packages" in attnc.__file__, attnc.__file__
assert os.path.exists(os.path.join(os.path.dirname(attnc.__file__), "libattnc.so"))
k = attnc.compile("attention p { heads = 2; head_dim = 8; mask = causal; }")
q = np.ones((1, 2, 3, 8), np.float32)
assert np.allclose(k(q, q, q), 1)
assert "q_offset" in attnc.Kernel.__doc__
print("import attnc: ok,", attnc.__file__)
PY
  )
}
for how in cmake lib; do
  /usr/bin/python3 -m venv --system-site-packages "$tmp/venv-$how"
  if [ "$how" = cmake ]; then
    env ATTNC_CMAKE_BUILD_DIR="$build" "$tmp/venv-$how/bin/pip" install -q --no-build-isolation "$tmp/src" \
      >"$tmp/pip-$how.log" 2>&1 || { cat "$tmp/pip-$how.log"; fail=1; continue; }
  else
    env ATTNC_LIB="$build/libattnc.so" "$tmp/venv-$how/bin/pip" install -q --no-build-isolation "$tmp/src" \
      >"$tmp/pip-$how.log" 2>&1 || { cat "$tmp/pip-$how.log"; fail=1; continue; }
  fi
  if check "$tmp/venv-$how"; then echo "ok   pip install . ($how)"; else echo "FAIL pip install . ($how)"; fail=1; fi
done
[ "$fail" = 0 ]
