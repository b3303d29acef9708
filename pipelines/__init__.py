"""Stream side of Flywheel: producer SDK, HTTP endpoint, PyFlink clean/route job,
Feast ingestor and the review client."""
