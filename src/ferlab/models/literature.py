from __future__ import annotations  # literature models are added here
