"""`make demo` (``python -m demo``): the whole loop on embedded defaults, on real data.

Written against the stages' public functions only: the supervisor, the SDK, the review
queue, the accounting, the retrain flow and serving (``orchestration.serving.load_version``).
"""
