"""The bundle contract that the workstation writes and the board reads: manifest schema,
preprocessing, artifact loading (backends, delegates, metadata), labels, parity figures and their
rendering, drift reference statistics, latency. Only numpy, OpenCV and a runtime: it imports
neither the training side nor the board application (tests/test_layers.py)."""
