"""Print this interpreter's trio version; given X.Y, exit non-zero unless trio is X.Y.*."""

import sys

import trio

version = trio.__version__
print(f"== trio {version} ({sys.prefix})")
if len(sys.argv) > 1 and version.split(".")[:2] != sys.argv[1].split("."):
    sys.exit(f"error: expected trio {sys.argv[1]}.x in {sys.prefix}, found trio {version}")
