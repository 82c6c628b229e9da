"""Deployment: BatchNorm folding, ONNX / TorchScript export, int8 quantisation, parity checks, runtimes."""
