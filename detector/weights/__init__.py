"""Weights the project knows by name (fetched once into torch's hub cache), and starting a model from them."""
