"""Let unmodified Chainer 7.8.1 import and run on NumPy 2 and Python 3.12.

Import this module before ``import chainer``.  Chainer 7.8.1 (the last
release) touches three names that newer stacks no longer have:

* ``numpy.distutils.system_info.get_info`` -- imported by
  ``chainer/_environment_check.py`` and called there only on macOS, to warn
  about Accelerate.  numpy.distutils is gone on Python 3.12 and in new NumPy.
* ``pkg_resources`` (``require``, ``DistributionNotFound``,
  ``VersionConflict``) -- used by the same module to look for the optional
  CuPy / iDeep packages.  New setuptools (or none at all) has no pkg_resources.
* ``numpy.sctypes['int']`` / ``['float']`` -- read by
  ``chainer/functions/array/as_strided.py`` at import and in its backward
  pass.  Removed in NumPy 2.0.

Each stand-in is installed only when the real one is missing, so on NumPy 1.26
and Python 3.11 with setuptools this module changes nothing.  ``chainer.testing``
also uses pkg_resources (``WorkingSet``), but neither importing Chainer nor
training needs it, so it is not covered.
"""
import importlib.metadata
import re
import sys
import types
import warnings

import numpy


def _missing(module_name):
    """True when ``module_name`` cannot be imported."""
    try:
        # Recent setuptools warns that pkg_resources is deprecated when it is first imported;
        # probing for it here is not the script's doing, so keep that out of its log.
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            __import__(module_name)
    except ImportError:
        return True
    return False


def _install_numpy_distutils():
    # Chainer only calls get_info('blas_opt') on macOS; "no info" ({}) simply
    # skips its Accelerate warning, as numpy.distutils does when none is found.
    system_info = types.ModuleType('numpy.distutils.system_info')
    system_info.get_info = lambda name, notfound_action=0: {}
    package = types.ModuleType('numpy.distutils')
    package.system_info = system_info
    sys.modules['numpy.distutils'] = package
    sys.modules['numpy.distutils.system_info'] = system_info
    # `import numpy.distutils.system_info` then reads numpy.distutils as an
    # attribute, which the import system does not set for preloaded modules.
    numpy.distutils = package


class _ResolutionError(Exception):
    pass


class _DistributionNotFound(_ResolutionError):
    pass


class _VersionConflict(_ResolutionError):
    pass


def _require(requirement):
    """Raise DistributionNotFound unless the named distribution is installed.

    Only presence is checked, not the version specifier: Chainer uses the
    answer just to warn about unsupported CuPy / iDeep versions.
    """
    name = re.split(r'[\s<>=!~;\[]', requirement, maxsplit=1)[0]
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise _DistributionNotFound(requirement) from None
    return []


def _install_pkg_resources():
    module = types.ModuleType('pkg_resources')
    module.__doc__ = 'Minimal stand-in installed by chainer_compat.'
    module.ResolutionError = _ResolutionError
    module.DistributionNotFound = _DistributionNotFound
    module.VersionConflict = _VersionConflict
    module.require = _require
    sys.modules['pkg_resources'] = module


def _install_sctypes():
    # The NumPy 1.x layout of numpy.sctypes (Chainer reads 'int' and 'float').
    numpy.sctypes = {
        'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        'float': [numpy.float16, numpy.float32, numpy.float64,
                  numpy.longdouble],
        'complex': [numpy.complex64, numpy.complex128, numpy.clongdouble],
        'others': [bool, object, bytes, str, numpy.void],
    }


if _missing('numpy.distutils.system_info'):
    _install_numpy_distutils()
if _missing('pkg_resources'):
    _install_pkg_resources()
if not hasattr(numpy, 'sctypes'):
    _install_sctypes()
