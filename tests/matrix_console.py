"""The console's permission-matrix entries and audit classification, one module per section."""

from tests import matrix_console_patients, matrix_console_retention, matrix_console_settings, matrix_console_users

SECTIONS = (matrix_console_users, matrix_console_patients, matrix_console_retention, matrix_console_settings)
MATRIX = {route: entry for section in SECTIONS for route, entry in section.MATRIX.items()}
NO_PATIENT_DATA = {route: why for section in SECTIONS for route, why in section.NO_PATIENT_DATA.items()}
