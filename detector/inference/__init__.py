"""The inference side: one runner interface (decoded frames in, ``Detections`` out), the PyTorch runner, device
resolution and stage timings. Runners of exported files live with their formats in ``detector.deploy``."""
