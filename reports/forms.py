from django import forms

from reports.selectors import Period


class PeriodForm(forms.Form):
    """The date-range filter of the report pages (dates in the clinic's calendar, both ends included)."""

    date_from = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="First day included"
    )
    date_to = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="Last day included"
    )

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def period(self) -> Period | None:
        """The period asked for (all time when empty), or None when the form is invalid."""
        if not self.is_valid():
            return None
        return Period(date_from=self.cleaned_data["date_from"], date_to=self.cleaned_data["date_to"])


class ClinicPeriodForm(PeriodForm):
    """The clinic report's filter; an admin of several clinics also picks the clinic."""

    clinic = forms.ChoiceField(label="Clinic", required=False)

    def __init__(self, data, *, clinics):
        super().__init__(data)
        self.clinics = {c.slug: c for c in clinics}
        self.fields["clinic"].choices = [(c.slug, c.name) for c in clinics]
        if len(self.clinics) < 2:
            self.fields["clinic"].widget = forms.HiddenInput()

    def selected_clinic(self):
        slug = self.cleaned_data.get("clinic") if self.is_valid() else None
        return self.clinics.get(slug) or next(iter(self.clinics.values()), None)


class NoteForm(forms.Form):
    """A clinical note: the date it is about (the clinic's calendar) and its text. The service
    (`reports.notes`) checks both again and is what decides; the form parses the date and keeps what was
    typed when the page is shown again with an error."""

    written_on = forms.DateField(
        label="Date",
        # An <input type="date"> takes ISO dates only, whatever the language of the page.
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        input_formats=["%Y-%m-%d"],
        error_messages={"required": "Give the date."},
    )
    body = forms.CharField(
        label="Note",
        strip=False,
        required=False,  # an empty note gets the service's message, like every other check of the text
        widget=forms.Textarea(attrs={"rows": 5, "maxlength": 10000}),
    )
