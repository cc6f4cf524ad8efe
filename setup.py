"""The build step of `pip install .`: puts libattnc.so next to the package.

Where the library comes from, in order:
  1. ATTNC_LIB=/path/to/libattnc.so: that file is copied in;
  2. ATTNC_USE_SYSTEM_LIB=1: nothing is copied; the package loads the installed libattnc.so
     (from `cmake --install`, on the system's library path) at import;
  3. otherwise CMake builds the library from this source tree, in ATTNC_CMAKE_BUILD_DIR
     (default build-pip/; an existing build tree is reused), and it is copied in.
The library needs LLVM's shared library at run time (llvm-19, found through its rpath).
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _library():
    lib = os.environ.get("ATTNC_LIB")
    if lib:
        if not os.path.isfile(lib):
            raise SystemExit("attnc: ATTNC_LIB=%s is not a file" % lib)
        return lib
    if os.environ.get("ATTNC_USE_SYSTEM_LIB") == "1":
        return None
    build = os.path.abspath(os.environ.get("ATTNC_CMAKE_BUILD_DIR") or os.path.join(HERE, "build-pip"))
    if not os.path.isfile(os.path.join(build, "CMakeCache.txt")):
        subprocess.check_call(["cmake", "-S", HERE, "-B", build, "-DCMAKE_BUILD_TYPE=Release"])
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    subprocess.check_call(["cmake", "--build", build, "--target", "attnc_shared", "-j", jobs])
    return os.path.join(build, "libattnc.so")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = _library()
        if lib:
            dest = os.path.join(self.build_lib, "attnc", "libattnc.so")
            shutil.copyfile(os.path.realpath(lib), dest)


setup(cmdclass={"build_py": BuildWithLibrary})
