"""Internals of the `rat7m` dataset builder (installed as ``rat7m_builder``).

One module per concern: ``manifest`` (release constants and file names), ``errors``,
``camera`` (the camera model), ``mocap`` (motion-capture + calibration parsing), ``sources``
(finding and opening release files), ``video`` (PyAV decoding + JPEG), ``features``, ``examples``
(per-shard example generation), ``download`` (figshare), ``hub`` (Parquet export and push),
``render`` (pictures), ``sample`` (the fabricated miniature release), ``writeback`` (page-cache
trimming while preparing), ``cli``.
Domain modules (``camera``, ``mocap``, ``manifest``) import neither ``datasets`` nor any I/O layer.
"""
