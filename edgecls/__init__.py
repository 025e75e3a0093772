"""edgecls: image classifiers from a folder of photos to a camera on an edge board."""

import os

# TensorFlow's C++ start-up chatter (CPU flags, CUDA probing) is noise for our users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
