"""Flywheel's Feast feature repository.

``definitions`` holds the Feast objects (entity ``sample``, push source, feature view
``feedback_samples``, feature service ``training``); ``store`` opens the store described
by the settings, applies the definitions and reads/writes the append-only offline layout.
The stream ingestor writes through it and the training stage reads through it; it depends
only on the ``flywheel`` core.
"""
