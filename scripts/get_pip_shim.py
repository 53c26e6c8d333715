"""Stand-in for get-pip.py, which ansible-test downloads to put pip into its sanity venvs.

This machine reaches PyPI but not the host that serves get-pip.py, so `make sanity`
seeds ansible-test's cache with this file: it runs the pip wheel bundled with
CPython's ensurepip, which then installs the pip version ansible-test asks for.
"""

import ensurepip
import glob
import os
import sys

ARGS = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel", "--no-pip")]
WHEELS = glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl"))
if not WHEELS:
    sys.exit("get_pip shim: no bundled pip wheel found in ensurepip")
sys.path.insert(0, sorted(WHEELS)[-1])
from pip._internal.cli.main import main  # noqa: E402  pylint: disable=wrong-import-position

sys.exit(main(["install", "--upgrade", "--force-reinstall"] + ARGS))
