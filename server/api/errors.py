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


_INTERNAL = rpc_status.to_status(status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0],
                                                   message=INTERNAL_MESSAGE))


def _status_of(error: Exception, method: str) -> grpc.Status:
    if isinstance(error, DomainError):
        return to_status(error)
    log.exception("unexpected error in %s", method, exc_info=error)
    return _INTERNAL


def _refuse(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    """Ends the call with `status` once the handler returns. Not context.abort(): grpc.aio keeps the AbortError it
    raises on the call's state, and the error's traceback holds the handler's frames and so the call's state and its
    decoded request: a reference cycle per refused call, that only the cycle collector frees, which the server's GC
    tuning runs rarely. Returning leaves no cycle; grpc then sends an empty message before the status of a unary call,
    which clients ignore."""
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def refusal(error: DomainError, *, response_streaming: bool) -> grpc.RpcMethodHandler:
    """A handler that answers every call with `error` without reading its request. grpc.aio receives a unary
    request whole, and copies it into Python, before it calls the handler; it calls the handler of a request stream
    at once, and this one never reads the stream: gRPC's core drops what the caller sends."""
    status = to_status(error)

    async def refuse(requests: object, context: grpc.aio.ServicerContext) -> None:
        _refuse(context, status)

    if response_streaming:  # a coroutine, not an async generator: grpc then sends the status alone
        return grpc.stream_stream_rpc_method_handler(refuse)
    return grpc.stream_unary_rpc_method_handler(refuse)


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
        self._wrapped: dict[grpc.RpcMethodHandler, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        # Asked on every call: the interceptors after this one choose a handler per call (AuthInterceptor refuses a
        # call without a valid key with a handler of its own). Each builds its handlers once per method, so this
        # wraps each of them once, and nothing in a wrapper depends on the call.
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            wrapped = self._wrapped[handler] = self._wrap(handler, handler_call_details.method)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Undecodable):
                    return _refuse(context, to_status(request.error))
                try:
                    return await inner_unary(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as e:
                    return _refuse(context, _status_of(e, method))

            return grpc.unary_unary_rpc_method_handler(unary_unary, _tolerant(handler.request_deserializer),
                                                       handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if isinstance(request, _Undecodable):
                    _refuse(context, to_status(request.error))
                    return
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
                    _refuse(context, _status_of(e, method))

            return grpc.unary_stream_rpc_method_handler(unary_stream, _tolerant(handler.request_deserializer),
                                                        handler.response_serializer)
        return handler
