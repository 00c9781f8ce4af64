"""Build the Cython packet engine in csrc/ into the ethlink package.

Every protocol lives in its own csrc/*.pxd (inline cdef functions over the structs in
csrc/core.pxd); csrc/engine.pyx cimports them, so the whole hot path compiles into one
extension, ethlink._engine, with no cross-module call in the event loop. The routing
search of compile (csrc/routing.pyx) is a small extension of its own, ethlink._routing.
"""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "ethlink._engine",
        ["csrc/engine.pyx"],
        include_dirs=[numpy.get_include(), "csrc"],
        extra_compile_args=["-O3"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(                          # the routing search (ethlink.topology.route)
        "ethlink._routing",
        ["csrc/routing.pyx"],
        include_dirs=[numpy.get_include(), "csrc"],
        extra_compile_args=["-O3"],
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
