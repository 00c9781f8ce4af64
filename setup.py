"""Build the Cython packet engine in csrc/ into the ethlink package.

Every protocol lives in its own csrc/*.pxd (inline cdef functions over the structs in
csrc/core.pxd); csrc/engine.pyx cimports them, so the whole hot path compiles into one
extension, ethlink._engine, with no cross-module call in the event loop. The routing
search of compile (csrc/routing.pyx) is a small extension of its own, ethlink._routing.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# The Makefile's profile-guided build: ETHLINK_PGO=generate:DIR builds instrumented (the
# counts go to DIR), ETHLINK_PGO=use:DIR with DIR's counts. The flags are added to
# Python's own (-fwrapv, -DNDEBUG, ...), which a CFLAGS variable would replace.
PGO_FLAGS = {
    "generate": ["-fprofile-generate={}", "-fprofile-update=single"],
    "use": ["-fprofile-use={}", "-Wno-missing-profile"],
}
mode, _, pgo_dir = os.environ.get("ETHLINK_PGO", "").partition(":")
pgo = [f.format(os.path.abspath(pgo_dir)) for f in PGO_FLAGS[mode]] if mode else []

extensions = [
    Extension(
        "ethlink._engine",
        ["csrc/engine.pyx"],
        include_dirs=[numpy.get_include(), "csrc"],
        extra_compile_args=["-O3"] + pgo,
        extra_link_args=pgo,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(                          # the routing search (ethlink.topology.route)
        "ethlink._routing",
        ["csrc/routing.pyx"],
        include_dirs=[numpy.get_include(), "csrc"],
        extra_compile_args=["-O3"] + pgo,
        extra_link_args=pgo,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["csrc"],
        compiler_directives={"language_level": 3},
    ),
)
