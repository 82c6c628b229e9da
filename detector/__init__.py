"""SSDLite + MobileNetV3 object detection (Howard et al., "Searching for MobileNetV3", ICCV 2019)."""

__version__ = "0.1.0"
