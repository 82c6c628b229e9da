"""ImageNet backbones and their SSDLite feature taps (MobileNetV3, V2, V1, MnasNet)."""
