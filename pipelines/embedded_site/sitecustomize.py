"""Run by PyFlink's embedded interpreter (thread mode) as it starts, before the job's code:
``pipelines.stream_job`` puts this folder on the job's ``PYTHONPATH``.

It keeps library noise out of what the user of ``flywheel stream run`` reads: Beam warns on
import that optional filesystems (GCS, S3) are not installed, which the job never uses.
"""

import logging

logging.getLogger("apache_beam").setLevel(logging.ERROR)
