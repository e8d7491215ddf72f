"""The clinical-notes section of the patient page: `{% clinical_notes patient %}`.

The patient page (`tracking.views.patient_detail`) has checked access and audits the read of the
patient; this tag reads the notes through the selector and renders them with the form to add one.
"""

from django import template

from reports import patient_report
from reports.forms import NoteForm
from tracking.history import local_today

register = template.Library()


@register.inclusion_tag("reports/_notes.html", takes_context=True)
def clinical_notes(context, patient):
    user = context["request"].user
    form = NoteForm(initial={"written_on": local_today(patient.clinic.timezone)}, auto_id="note_%s")
    return {
        "patient": patient,
        "notes": patient_report.patient_notes(patient, user),
        "form": form,
        "csrf_token": context.get("csrf_token"),
    }
