"""SSDLite: extra layers, predictor heads, anchors, box coding, matching, losses and post-processing."""
