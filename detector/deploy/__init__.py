"""Deployment: the export formats (ONNX, OpenVINO, ExecuTorch, TorchScript; each a writer and a runner), the one
export pipeline (parity, int8, drift, accuracy gate, atomic move), BatchNorm folding, and the runtime table with
``--runtime auto``."""
