"""The `almquist.v1.Account` gRPC service: who the caller is, and everything kept about them (export, delete).

In: Account RPCs, already admitted by graphs/access.py (the caller's identity in `current_identity()`). Out: the
identity, a JSON export of the caller's data, or counts of what was deleted. Reads and deletes go through the
SessionStore actor, so an export or a deletion is one transaction of the durable store.
"""

from __future__ import annotations

import json
from typing import Any

from almquist.v1 import account_pb2
from graphs.access import current_identity
from graphs.rpc import aborting


class AccountService:
    """gRPC methods of `almquist.v1.Account`."""

    def __init__(self, sessions: Any) -> None:
        self._sessions = sessions

    async def WhoAmI(self, request: account_pb2.WhoAmIRequest, grpc_context: Any = None) -> account_pb2.WhoAmIResponse:
        identity = current_identity()
        return account_pb2.WhoAmIResponse(user_id=identity.user_id, name=identity.name, role=identity.role)

    async def ExportMyData(
        self, request: account_pb2.ExportMyDataRequest, grpc_context: Any = None
    ) -> account_pb2.ExportMyDataResponse:
        with aborting(grpc_context):
            exported = await self._sessions.export_user.remote(current_identity().user_id)
        return account_pb2.ExportMyDataResponse(json=json.dumps(exported, ensure_ascii=False))

    async def DeleteMyData(
        self, request: account_pb2.DeleteMyDataRequest, grpc_context: Any = None
    ) -> account_pb2.DeleteMyDataResponse:
        with aborting(grpc_context):
            counts = await self._sessions.delete_user_data.remote(current_identity().user_id)
        return account_pb2.DeleteMyDataResponse(**counts)

    async def DeleteUser(
        self, request: account_pb2.DeleteUserRequest, grpc_context: Any = None
    ) -> account_pb2.DeleteUserResponse:
        with aborting(grpc_context):
            user = await self._sessions.user.remote(request.user)
            counts = await self._sessions.delete_user.remote(user.user_id)
        return account_pb2.DeleteUserResponse(**counts)
