"""Data: image decoding, COCO-format datasets, augmentation, batching and the synthetic demo dataset."""
