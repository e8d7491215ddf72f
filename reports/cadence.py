"""Measurement cadence (DESIGN §8): which questionnaires are due for a patient, and since when. Pure."""
