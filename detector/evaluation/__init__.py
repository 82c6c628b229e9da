"""COCO evaluation with pycocotools: ground truth, running a model over a dataset, the human-facing report."""
