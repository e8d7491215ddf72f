"""The daily measures-due digest (DESIGN §8): each therapist gets one e-mail a day listing their patients
with a questionnaire due (ids only, never scores or free text)."""


def send_due_digests(*, stop_on: tuple[type[BaseException], ...] = ()) -> int:
    """Sends the digests that are due now. Returns how many e-mails were sent."""
    return 0
