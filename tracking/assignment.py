"""Patients' assignment to therapists and their clinic-side details (DESIGN §6); audited."""
