"""COCO evaluation with pycocotools: ground truth and scoring, running a model over a dataset, evaluating a
checkpoint and writing its results (run), a ready detector's AP (detector_accuracy), the human-facing report."""
