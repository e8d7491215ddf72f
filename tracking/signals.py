from django.dispatch import Signal

# Sent after the transaction that stored a new milestone commits; kwargs: milestone, highlight.
milestone_achieved = Signal()
