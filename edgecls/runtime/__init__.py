"""The device side: only numpy, OpenCV and a runtime (LiteRT or ONNX Runtime). Never TensorFlow."""
