"""The inference application: frame sources, the detector a tool opens, drawing and output writers."""
