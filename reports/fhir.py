"""FHIR R4 export (DESIGN §8): a patient's questionnaire data as a Bundle of type collection. Pure."""
