"""The application: the Python API (``api``: ``detector.load`` and the ``Detector`` it returns), frame sources,
the detection loop (``run``), drawing and the output writers (``outputs``, ``video_writer``)."""
