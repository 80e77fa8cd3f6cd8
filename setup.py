"""Build the compiled core.  Metadata lives in pyproject.toml."""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SLOTENGINE_DEBUG") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

ext = Extension(
    "slotengine._core",
    ["src/slotengine/_core.pyx"],
    language="c++",
    include_dirs=[numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-O2", "-std=c++17"] + (["-O0", "-g"] if DEBUG else []),
)

# Debug builds must re-cythonize: the directives and the annotation change.
setup(ext_modules=cythonize([ext], compiler_directives=directives, annotate=DEBUG, force=DEBUG))
