"""The paper's Table 6: its rows and recipes, the counting convention, latency timing, torchvision conversion."""
