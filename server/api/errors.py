"""The one place domain errors become gRPC status (google.rpc.Status) and Connect errors, both with ErrorInfo and
BadRequest details."""

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.errors import DomainError, InvalidArgument

ERROR_DOMAIN = "postbacks.v1"
log = logging.getLogger("postbacks.api")


def _details(error: DomainError) -> list[Message]:
    details: list[Message] = [error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN,
                                                          metadata=error.metadata)]
    if isinstance(error, InvalidArgument):
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]))
    return details


def to_status(error: DomainError) -> grpc.Status:
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    for detail in _details(error):
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def to_connect_error(error: DomainError) -> ConnectError:
    """The same error for the Connect protocol: its codes are gRPC's, and its JSON `details` carry each message
    packed (`value`) and readable (`debug`)."""
    return ConnectError(Code[error.code.name], error.message, _details(error))


INTERNAL_MESSAGE = "internal error; the service logged the details"


def connect_error_of(error: Exception, method: str) -> ConnectError:
    """What a Connect caller is told of an exception: a domain error as such, anything else as INTERNAL without
    internals (connect-python would send the exception's text)."""
    if isinstance(error, ConnectError):
        return error
    if isinstance(error, DomainError):
        return to_connect_error(error)
    log.exception("unexpected error in %s", method, exc_info=error)
    return ConnectError(Code.INTERNAL, INTERNAL_MESSAGE)


async def _abort(context: grpc.aio.ServicerContext, error: Exception, method: str) -> None:
    if isinstance(error, DomainError):
        await context.abort_with_status(to_status(error))
    log.exception("unexpected error in %s", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


class _Undecodable:
    """A request whose bytes are not a message of the method's request type (truncated, invalid UTF-8 in a string
    field, corrupt): the caller's mistake, answered INVALID_ARGUMENT rather than gRPC's own UNKNOWN."""

    def __init__(self, error: DecodeError) -> None:
        self.error = InvalidArgument([], f"the request is not a valid protobuf message: {error}")


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as e:
            return _Undecodable(e)

    return deserialize


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler: DomainError -> its status; anything else -> INTERNAL without internals; a request that
    does not decode -> INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method not in self._wrapped:  # built once per method; nothing in the wrapper depends on the call
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler
            self._wrapped[method] = self._wrap(handler, method)
        return self._wrapped[method]

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Undecodable):
                    await context.abort_with_status(to_status(request.error))
                try:
                    return await inner_unary(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as e:
                    await _abort(context, e, method)

            return grpc.unary_unary_rpc_method_handler(unary_unary, _tolerant(handler.request_deserializer),
                                                       handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if isinstance(request, _Undecodable):
                    await context.abort_with_status(to_status(request.error))
                try:
                    responses = inner_stream(request, context)
                    if inspect.isawaitable(responses):  # a handler that writes with context.write() (health Watch)
                        await responses
                        return
                    async for response in responses:
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as e:
                    await _abort(context, e, method)

            return grpc.unary_stream_rpc_method_handler(unary_stream, _tolerant(handler.request_deserializer),
                                                        handler.response_serializer)
        return handler
