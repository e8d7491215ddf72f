"""The clinic admin's console (DESIGN §6): running the clinic without a superuser. Thin views: access,
a selector, a service. Clinic admins see people and identifiers here, never clinical detail."""

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import SetPasswordForm
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods, require_POST

from tracking import access, accounts, people, selectors, services
from tracking.models import Role


def _admin_clinics(request):
    access.require_role(request.user, [Role.CLINIC_ADMIN])
    return access.clinics_with_role(request.user, Role.CLINIC_ADMIN)


class ClinicChoiceMixin(forms.Form):
    """A clinic field among the admin's clinics; hidden (and preset) when they run one."""

    def __init__(self, *args, clinics, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["clinic"] = forms.ModelChoiceField(queryset=clinics, empty_label=None, label="Clinic")
        self.only_clinic = clinics[0] if len(clinics) == 1 else None
        if self.only_clinic is not None:
            self.fields["clinic"].required = False
            self.fields["clinic"].widget = forms.HiddenInput()

    def clean_clinic(self):
        return self.cleaned_data.get("clinic") or self.only_clinic


class InviteForm(ClinicChoiceMixin):
    username = forms.RegexField(
        regex=r"^[\w.@+-]+\Z",
        max_length=150,
        label="Username",
        error_messages={"invalid": "Use letters, digits and . @ + - _ only."},
    )
    email = forms.EmailField(label="E-mail", max_length=254)
    first_name = forms.CharField(label="First name", max_length=150, required=False)
    last_name = forms.CharField(label="Last name", max_length=150, required=False)
    role = forms.ChoiceField(label="Role", choices=Role.choices)

    def clean_username(self):
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(f"The username {username!r} is taken; choose another.")
        return username


class RoleForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=Role.choices)


class TokenForm(ClinicChoiceMixin):
    name = forms.CharField(label="Name", max_length=100, help_text="What the token is for, e.g. game-server-prod.")

    def clean(self):
        cleaned = super().clean()
        name, clinic = cleaned.get("name", "").strip(), cleaned.get("clinic")
        if clinic is not None and name and people.active_token_named(clinic, name):
            self.add_error("name", f"An active token named {name!r} exists; choose another name or revoke it first.")
        cleaned["name"] = name
        return cleaned


def _users_page(request, clinics, *, invite_form=None, status=200):
    members = list(selectors.clinic_user_rows(request.user))
    for m in members:
        m.pending = people.invitation_pending(m.user)
        m.is_self = m.user_id == request.user.pk
    context = {
        "members": members,
        "invite_form": invite_form or InviteForm(clinics=clinics),
        "roles": Role.choices,
        "many_clinics": len(clinics) > 1,
        "invitation_hours": people.INVITATION_HOURS,
    }
    return render(request, "tracking/clinic_users.html", context, status=status)


@require_http_methods(["GET"])
def clinic_users(request):
    """The clinic's users: role, last login, whether a second factor is set up; the invitation form and
    each user's role, deactivation and second-factor reset."""
    return _users_page(request, _admin_clinics(request))


def _invitation_link(request):
    def link(user):
        uidb64, token = people.invitation_path_parts(user)
        return request.build_absolute_uri(reverse("welcome", args=[uidb64, token]))

    return link


@require_POST
def clinic_user_invite(request):
    """Invites a user by e-mail: created without a usable password, with a one-time link to set one."""
    clinics = _admin_clinics(request)
    form = InviteForm(request.POST, clinics=clinics)
    if not form.is_valid():
        return _users_page(request, clinics, invite_form=form, status=400)
    data = form.cleaned_data
    with transaction.atomic():
        user = services.user_create(
            username=data["username"], clinic=data["clinic"], role=data["role"], password=None, email=data["email"]
        )
        people.user_invite(
            user=user,
            clinic=data["clinic"],
            role=data["role"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            link=_invitation_link(request),
        )
    messages.success(
        request,
        f"Invited {user.get_username()}: an e-mail to {user.email} has a link to set a password, "
        f"valid for {people.INVITATION_HOURS} hours.",
    )
    return redirect("clinic-users")


def _member_or_404(request, user_id):
    access.require_role(request.user, [Role.CLINIC_ADMIN])
    member = selectors.clinic_member(request.user, user_id)
    if member is None:
        raise Http404
    return member


def _refused(request, error: people.PeopleError):
    messages.error(request, error.message_text)
    return redirect("clinic-users")


@require_POST
def clinic_user_role(request, user_id: int):
    """Changes a user's role in the clinic (never one's own, nor the last admin's)."""
    member = _member_or_404(request, user_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Role: " + " ".join(form.errors["role"]))
        return redirect("clinic-users")
    before = member.get_role_display()
    try:
        changed = people.role_set(
            clinic=member.clinic, user=member.user, role=form.cleaned_data["role"], by=request.user
        )
    except people.PeopleError as error:
        return _refused(request, error)
    messages.success(request, f"{member.user.get_username()}: {before} → {changed.get_role_display()}.")
    return redirect("clinic-users")


@require_POST
def clinic_user_resend(request, user_id: int):
    """A new invitation link for someone who has not set a password yet."""
    member = _member_or_404(request, user_id)
    try:
        people.invitation_resend(
            user=member.user, clinic=member.clinic, link=_invitation_link(request), by=request.user
        )
    except people.PeopleError as error:
        return _refused(request, error)
    messages.success(
        request,
        f"A new link is on its way to {member.user.email}, valid for {people.INVITATION_HOURS} hours.",
    )
    return redirect("clinic-users")


@require_POST
def clinic_user_deactivate(request, user_id: int):
    """Deactivates a user: they cannot log in, and their sessions end now."""
    member = _member_or_404(request, user_id)
    try:
        ended = people.user_deactivate(user=member.user, by=request.user, end_sessions=accounts.end_sessions)
    except people.PeopleError as error:
        return _refused(request, error)
    messages.success(
        request, f"{member.user.get_username()} is deactivated and cannot log in; {ended} session(s) ended."
    )
    return redirect("clinic-users")


@require_POST
def clinic_user_reactivate(request, user_id: int):
    member = _member_or_404(request, user_id)
    if people.user_reactivate(user=member.user, by=request.user):
        messages.success(request, f"{member.user.get_username()} is active again and can log in.")
    else:
        messages.info(request, f"{member.user.get_username()} was already active.")
    return redirect("clinic-users")


@require_POST
def clinic_user_reset_mfa(request, user_id: int):
    """Removes a user's second factor (a lost phone): their sessions end, and they enrol again at their
    next login. Audited (`auth.mfa`, event `reset`) in the clinic's chain."""
    member = _member_or_404(request, user_id)
    removed = accounts.reset_second_factor(user=member.user, by=request.user, clinic=member.clinic)
    if removed:
        messages.success(
            request,
            f"The second factor of {member.user.get_username()} was reset; they set up a new one at their next login.",
        )
    else:
        messages.info(request, f"{member.user.get_username()} had no second factor set up.")
    return redirect("clinic-users")


@login_not_required
@require_http_methods(["GET", "POST"])
def welcome(request, uidb64: str, token: str):
    """The invitation's one-time link: sets the first password (Django's validators: 12 characters at
    least), then on to the login. A used, expired or altered link says so, and nothing else."""
    user = people.invitation_user(uidb64, token)
    if user is None:
        return render(request, "registration/welcome.html", {"invalid": True}, status=410)
    form = SetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        people.invitation_accept(user=user, password=form.cleaned_data["new_password1"])
        messages.success(request, f"Your password is set, {user.get_username()}. Log in with it now.")
        return redirect("login")
    return render(
        request, "registration/welcome.html", {"form": form, "invited": user}, status=400 if form.errors else 200
    )


def _tokens_page(request, clinics, *, form=None, created=None, status=200):
    context = {
        "tokens": people.clinic_tokens(clinics),
        "form": form or TokenForm(clinics=clinics),
        "created": created,
        "many_clinics": len(clinics) > 1,
    }
    return render(request, "tracking/clinic_tokens.html", context, status=status)


@require_http_methods(["GET", "POST"])
def clinic_tokens(request):
    """The game server's ingest tokens: name, prefix, created, last used, revoked; create one (the token
    is on this response only, never shown again)."""
    clinics = _admin_clinics(request)
    if request.method == "GET":
        return _tokens_page(request, clinics)
    form = TokenForm(request.POST, clinics=clinics)
    if not form.is_valid():
        return _tokens_page(request, clinics, form=form, status=400)
    token, raw = services.ingest_token_create(clinic=form.cleaned_data["clinic"], name=form.cleaned_data["name"])
    return _tokens_page(request, clinics, created={"token": token, "raw": raw}, status=201)


@require_POST
def clinic_token_revoke(request, token_id: int):
    """Revokes a token: the game server using it gets 401 from now on."""
    token = people.clinic_token(_admin_clinics(request), token_id)
    if token is None:
        raise Http404
    if token.revoked_at is not None:
        messages.info(request, f"The token {token.name!r} was already revoked.")
    else:
        services.ingest_token_revoke(token=token)
        messages.success(request, f"The token {token.name!r} ({token.prefix}…) is revoked; ingest with it is refused.")
    return redirect("clinic-tokens")


def console_home(request):
    """/clinic/: the console's sections."""
    access.require_role(request.user, [Role.CLINIC_ADMIN])
    context = {"clinics": access.clinics_with_role(request.user, Role.CLINIC_ADMIN)}
    return render(request, "tracking/console_home.html", context)


# Mounted under /clinic/ by tracking.console_urls.
urlpatterns = [
    path("", console_home, name="clinic"),
    path("users/", clinic_users, name="clinic-users"),
    path("users/invite", clinic_user_invite, name="clinic-user-invite"),
    path("users/<int:user_id>/role", clinic_user_role, name="clinic-user-role"),
    path("users/<int:user_id>/resend-invitation", clinic_user_resend, name="clinic-user-resend"),
    path("users/<int:user_id>/deactivate", clinic_user_deactivate, name="clinic-user-deactivate"),
    path("users/<int:user_id>/reactivate", clinic_user_reactivate, name="clinic-user-reactivate"),
    path("users/<int:user_id>/reset-second-factor", clinic_user_reset_mfa, name="clinic-user-reset-mfa"),
    path("tokens/", clinic_tokens, name="clinic-tokens"),
    path("tokens/<int:token_id>/revoke", clinic_token_revoke, name="clinic-token-revoke"),
]
