"""Schemathesis hooks for test_schemathesis.py: the run's credentials, taken from the site's
own database.

A fuzzer with a site admin's token revokes tokens, its own among them (it finds the id in
`GET /api/users/{username}/tokens`). A static `Authorization` header would then turn the rest of
the run into 401s; a token minted here is replaced on the first 401 (Schemathesis re-asks the
provider and replays the request), so no operation has to be left out to keep the run useful.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import schemathesis

from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.dispatch.access import executor_token
from offload.identity.tokens import AccessTokens
from offload.identity.users import Users

DATABASE = os.environ["OFFLOAD_FUZZ_DATABASE_URL"]
USERNAME = os.environ["OFFLOAD_FUZZ_USERNAME"]
EXECUTOR_ROUTES = r"^/\.executors/"
# Minted tokens last the whole run unless revoked; a 401 asks for a new one at once.
REFRESH = 3600


async def _user_token() -> str:
    db = await open_database(DatabaseURL.parse(DATABASE))
    try:
        user = await Users(db).get(USERNAME)
        assert user is not None, f"no user {USERNAME} in {DATABASE}"
        scopes = ["user:all", "site-admin"] if user.site_admin else ["user:all"]
        return (await AccessTokens(db).create(user.id, scopes, note="schemathesis"))[1]
    finally:
        await db.close()


async def _executor_token() -> str:
    db = await open_database(DatabaseURL.parse(DATABASE))
    try:
        return await executor_token(db)
    finally:
        await db.close()


def _authorize(case: schemathesis.Case, value: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": value}


@schemathesis.auth(refresh_interval=REFRESH).skip_for(path_regex=EXECUTOR_ROUTES)
class UserToken:
    """An access token of OFFLOAD_FUZZ_USERNAME's, with a site admin's scope if they are one."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        """A new token."""
        return asyncio.run(_user_token())

    def set(self, case: schemathesis.Case, data: str, context: Any) -> None:
        """Send it as people's tokens are sent."""
        _authorize(case, f"token {data}")


@schemathesis.auth(refresh_interval=REFRESH).apply_to(path_regex=EXECUTOR_ROUTES)
class ExecutorToken:
    """The site's executor token, for the executor protocol's routes."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        """The current executor token."""
        return asyncio.run(_executor_token())

    def set(self, case: schemathesis.Case, data: str, context: Any) -> None:
        """Send it as executors do."""
        _authorize(case, f"token-executor {data}")


# A dequeue long-polls for up to `wait` seconds (30 at most) when no job is queued: the fuzzer
# would spend its time waiting rather than asking. Any wait the server accepts is shortened;
# the protocol's tests cover the long poll itself.
SHORT_WAIT = 0.2


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: Any) -> None:
    """Dequeues wait at most SHORT_WAIT seconds (in every phase, boundary values included)."""
    body = case.body
    if case.operation.path.endswith("/dequeue") and isinstance(body, dict):
        wait = body.get("wait")
        if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > SHORT_WAIT:
            body["wait"] = SHORT_WAIT
