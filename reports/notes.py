"""Clinical notes: a therapist's dated notes on a patient, encrypted at rest, audited, edited only by
their author with every earlier version kept."""
