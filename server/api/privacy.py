"""PrivacyService: erase a player's data."""

import grpc

from postbacks.v1 import privacy_service_pb2 as pb
from postbacks.v1 import privacy_service_pb2_grpc
from server.api import translate
from server.core import hashing, limits
from server.errors import Violations
from server.services import privacy
from server.services.context import ServiceContext
from server.services.privacy import ErasureRequest


def erasure_from_proto(request: pb.DeleteUserDataRequest) -> tuple[str, ErasureRequest]:
    game_id = translate.parse_game(request.parent)
    violations = Violations()
    user_id = request.user_id.strip()
    anonymous_id = request.anonymous_id.strip()
    for field_path, value in (("user_id", user_id), ("anonymous_id", anonymous_id)):
        if problem := translate.text_problem(value, limits.PLAYER_ID):
            violations.add(field_path, problem)
    email_sha256 = None
    if request.email:
        if len(request.email) > limits.EMAIL or not hashing.looks_like_email(request.email):
            violations.add("email", "must be an email address such as player@example.com")
        else:
            email_sha256 = hashing.hash_email_tiktok(request.email)
    if not (user_id or anonymous_id or request.email):
        violations.add("user_id", "at least one of user_id, anonymous_id and email is required")
    violations.raise_if_any()
    return game_id, ErasureRequest(user_id or None, anonymous_id or None, email_sha256)


class PrivacyServicer(privacy_service_pb2_grpc.PrivacyServiceServicer):
    def __init__(self, ctx: ServiceContext):
        self._ctx = ctx

    async def DeleteUserData(self, request: pb.DeleteUserDataRequest,
                             context: grpc.aio.ServicerContext) -> pb.DeleteUserDataResponse:
        game_id, erasure = erasure_from_proto(request)
        report = await privacy.delete_user_data(self._ctx, game_id, erasure)
        return pb.DeleteUserDataResponse(
            deleted_event_count=report.deleted_event_count,
            deleted_identity_link_count=report.deleted_identity_link_count,
            deleted_conversion_count=report.deleted_conversion_count,
            cancelled_postback_count=report.cancelled_postback_count,
        )
