"""edgecls: image classifiers from a folder of photos to a camera on an edge board."""

__version__ = "0.1.0"
