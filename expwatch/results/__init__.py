"""Results and their checks: progress readers, validation, drift, noise floors, smoke runs."""
