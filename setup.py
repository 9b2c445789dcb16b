"""Builds the Cython backend: every kernels/<name>.pyx becomes fastdl._cy.<name>.

The extension is optional for users: a failed compile (no C compiler, no OpenMP) still
installs a working fastdl with the numba and numpy backends, and the reason is written to
fastdl/_cy/_build_failures.json, which ``fastdl.backends()`` reports. Set
FASTDL_REQUIRE_EXTENSIONS=1 (CI does) to make any build failure fatal instead.
"""

import glob
import json
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("FASTDL_REQUIRE_EXTENSIONS", "") not in ("", "0")
FAILURES_FILE = "_build_failures.json"
# Failures found before build_ext runs (cythonize itself), reported with the rest.
CYTHONIZE_FAILURES = {}

# Vectorisation-friendly but IEEE-preserving flags: these mirror numba's fastmath set
# {"nsz", "arcp", "contract", "reassoc"}; -ffast-math is avoided on purpose because it
# implies -ffinite-math-only, which breaks NaN/Inf propagation. No -march=native: the
# built wheel must run on any x86-64; BLAS does its own runtime CPU dispatch.
COMPILE_ARGS = [
    "-O3",
    "-fopenmp",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fno-signed-zeros",
    "-fassociative-math",
    "-freciprocal-math",
    "-ffp-contract=fast",
]
LINK_ARGS = ["-fopenmp"]
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "nonecheck": False,
}


class OptionalBuildExt(build_ext):
    """build_ext that records, instead of raising, why an extension did not build."""

    def run(self):
        self._failures = dict(CYTHONIZE_FAILURES)
        super().run()
        self._write_failures()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # compiler missing, OpenMP missing, ...
            if REQUIRE:
                raise
            self._failures[ext.name] = f"{type(exc).__name__}: {exc}"
            print(f"WARNING: optional extension {ext.name} failed to build: {exc}")

    def _write_failures(self):
        target_dir = os.path.dirname(self.get_ext_fullpath("fastdl._cy.probe"))
        os.makedirs(target_dir, exist_ok=True)
        path = os.path.join(target_dir, FAILURES_FILE)
        if self._failures:
            with open(path, "w") as fh:
                json.dump(self._failures, fh, indent=1)
        elif os.path.exists(path):
            os.remove(path)


def cython_extensions():
    sources = sorted(glob.glob(os.path.join("kernels", "*.pyx")))
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        if REQUIRE:
            raise
        CYTHONIZE_FAILURES["fastdl._cy"] = f"Cython or numpy missing at build time: {exc}"
        return []
    extensions = []
    for source in sources:
        name = os.path.splitext(os.path.basename(source))[0]
        extensions.append(
            Extension(
                f"fastdl._cy.{name}",
                [source],
                include_dirs=[numpy.get_include(), "kernels"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=COMPILE_ARGS,
                extra_link_args=LINK_ARGS,
                optional=not REQUIRE,
            )
        )
    try:
        return cythonize(extensions, compiler_directives=DIRECTIVES, quiet=True)
    except Exception as exc:  # a .pyx that does not translate
        if REQUIRE:
            raise
        CYTHONIZE_FAILURES["fastdl._cy"] = f"cythonize failed: {exc}"
        return []


setup(ext_modules=cython_extensions(), cmdclass={"build_ext": OptionalBuildExt})
