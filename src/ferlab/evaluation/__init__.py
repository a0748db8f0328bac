"""Metrics (numpy / scikit-learn) and reports (PNG plots + one HTML page)."""
