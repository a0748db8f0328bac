"""Inference without torch: ONNX Runtime classifier, face detection, the Recognizer pipeline, video."""
