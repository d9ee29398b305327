"""The image and video work: bytes to RGB, the network's input and output, depth to display (colormaps,
contrast, overlay, gray), PNG/JPEG encoding, stereo pairs, normal maps, exports (PLY, GLB, EXR, PFM...),
the legend, metric measuring, video frames and depth videos.

Plain functions on numpy arrays. May import ``app.depth``, ``app.options``, ``app.config`` and
``app.errors``; never the serving state or Flask.
"""
