"""Bearer-token authentication for the game server. The token decides the clinic."""

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from tracking.services import ingest_token_lookup


@dataclass(frozen=True)
class GameServer:
    """The request.user of a token-authenticated request: a machine client, never a person."""

    clinic_id: int
    token_name: str
    is_authenticated: bool = True
    is_staff: bool = False
    is_superuser: bool = False

    @property
    def pk(self) -> None:
        return None


class IngestTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, raw = header.partition(" ")
        if keyword != self.keyword or not raw.strip():
            raise exceptions.AuthenticationFailed("Malformed Authorization header; expected 'Bearer <token>'.")
        token = ingest_token_lookup(raw.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return GameServer(clinic_id=token.clinic_id, token_name=token.name), token

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class IngestTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tracking.api.authentication.IngestTokenAuthentication"
    name = "ingestToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A clinic's ingest token."}
