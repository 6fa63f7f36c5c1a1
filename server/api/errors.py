"""The one place domain errors become gRPC status: google.rpc.Status with ErrorInfo and BadRequest details."""

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.errors import DomainError, InvalidArgument

ERROR_DOMAIN = "postbacks.v1"
log = logging.getLogger("postbacks.api")


def to_status(error: DomainError) -> grpc.Status:
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN,
                                                          metadata=error.metadata))
    if isinstance(error, InvalidArgument):
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]))
    return rpc_status.to_status(status)


async def _abort(context: grpc.aio.ServicerContext, error: Exception, method: str) -> None:
    if isinstance(error, DomainError):
        await context.abort_with_status(to_status(error))
    log.exception("unexpected error in %s", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the service logged the details")


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
