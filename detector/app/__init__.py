"""The inference application: frame sources, choosing the detector (frame_detector), the detection loop (run),
drawing and the output writers (outputs, video_writer)."""
