"""edgecls: image classifiers from a folder of photos to a camera on an edge board."""

import importlib.metadata

from edgecls.logs import quiet_environment

# TensorFlow's C++ start-up chatter (CPU flags, CUDA probing) is noise for our users; the
# variables must be set before it loads, and a value the user exported wins.
quiet_environment()

try:
    __version__ = importlib.metadata.version("edgecls")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
