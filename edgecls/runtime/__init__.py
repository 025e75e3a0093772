"""The board application: sources, the loop, decisions, sinks, drift, the parity re-check,
benchmark and doctor, over the bundle contract (edgecls.bundle). Never TensorFlow."""
