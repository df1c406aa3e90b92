"""Stand-ins for the host protocol's messages, as the real Python worker's code uses them.

The worker (`azure_functions_runtime`) receives the Functions host's gRPC messages and builds its
replies with the generated protobuf module it is handed (`request.properties["protos"]`). The
devhost is that host, so it hands the worker this module: plain objects with the same field
names, proto3 defaults for unset fields and `WhichOneof`. Field names and oneof groups follow
`FunctionRpc.proto` of azure-functions-language-worker-protobuf (TypedData.data,
ParameterBinding.rpc_data, RpcHttp, StatusResult.Status, BindingInfo.Direction/DataType,
RpcHttpCookie.SameSite) — only the messages the worker's indexing, binding and invocation
paths touch.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar


class Message:
    """One protobuf message: keyword fields, proto3 defaults, `WhichOneof` for its oneofs."""

    DEFAULTS: ClassVar[dict[str, Any]] = {}
    ONEOFS: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, **fields: Any) -> None:
        for name, default in self.DEFAULTS.items():
            setattr(self, name, copy.copy(default))
        for name, value in fields.items():
            setattr(self, name, value)

    def WhichOneof(self, group: str) -> str | None:
        # A set field wins even when it holds its type's zero value (`string=""`), as in proto3.
        return next((f for f in self.ONEOFS[group] if getattr(self, f, None) is not None), None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class TypedData(Message):
    ONEOFS: ClassVar[dict[str, tuple[str, ...]]] = {
        "data": (
            "string",
            "json",
            "bytes",
            "stream",
            "http",
            "int",
            "double",
            "collection_bytes",
            "collection_string",
            "collection_double",
            "collection_sint64",
            "model_binding_data",
            "collection_model_binding_data",
        )
    }


class RpcHttp(Message):
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "method": "",
        "url": "",
        "headers": {},
        "body": None,
        "params": {},
        "status_code": "",
        "query": {},
        "enable_content_negotiation": False,
        "cookies": [],
    }


class RpcHttpCookie(Message):
    class SameSite:
        # `None` is a Python keyword, so the generated module exposes it only via getattr.
        Lax = 1
        Strict = 2
        ExplicitNone = 3

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "name": "",
        "value": "",
        "domain": None,
        "path": None,
        "expires": None,
        "secure": None,
        "http_only": None,
        "same_site": 0,
        "max_age": None,
    }


setattr(RpcHttpCookie.SameSite, "None", 0)


class NullableString(Message):
    pass


class NullableBool(Message):
    pass


class NullableDouble(Message):
    pass


class NullableTimestamp(Message):
    pass


class Timestamp(Message):
    pass


class ParameterBinding(Message):
    DEFAULTS: ClassVar[dict[str, Any]] = {"name": ""}
    ONEOFS: ClassVar[dict[str, tuple[str, ...]]] = {"rpc_data": ("data", "rpc_shared_memory")}


class RpcTraceContext(Message):
    DEFAULTS: ClassVar[dict[str, Any]] = {"trace_parent": "", "trace_state": "", "attributes": {}}


class RetryContext(Message):
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "retry_count": 0,
        "max_retry_count": 0,
        "exception": None,
    }


class InvocationRequest(Message):
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "invocation_id": "",
        "function_id": "",
        "input_data": [],
        "trigger_metadata": {},
        "trace_context": None,
        "retry_context": None,
    }

    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)
        if self.trace_context is None:
            self.trace_context = RpcTraceContext()
        if self.retry_context is None:
            self.retry_context = RetryContext()


class RpcException(Message):
    DEFAULTS: ClassVar[dict[str, Any]] = {"message": "", "stack_trace": "", "source": ""}


class StatusResult(Message):
    Failure = 0
    Success = 1
    Cancelled = 2
    DEFAULTS: ClassVar[dict[str, Any]] = {"status": 0, "exception": None, "logs": []}


class InvocationResponse(Message):
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "invocation_id": "",
        "return_value": None,
        "result": None,
        "output_data": [],
    }


class BindingInfo(Message):
    # Direction and DataType enums, flattened into the message as the generated code does.
    in_ = 0
    out = 1
    inout = 2
    undefined = 0
    string = 1
    binary = 2
    stream = 3


class RpcFunctionMetadata(Message):
    pass


class RpcRetryOptions(Message):
    pass


class WorkerMetadata(Message):
    pass


class WorkerInitResponse(Message):
    pass


class FunctionMetadataResponse(Message):
    pass


class FunctionLoadResponse(Message):
    pass
