"""The first site admin: created when a server starts on a database with no users."""

from __future__ import annotations

from dataclasses import dataclass

from offload.db.base import Database
from offload.identity import passwords
from offload.identity.namespaces import NameTaken
from offload.identity.tokens import AccessTokens
from offload.identity.users import Users

USERNAME = "admin"


@dataclass(frozen=True)
class FirstAdmin:
    """How the first site admin signs in: shown once, never stored in the clear."""

    username: str
    password: str
    token: str

    def message(self, url: str) -> str:
        """What the server prints, once."""
        return (
            f"offload created the first site admin, {self.username!r}. Keep these now: they "
            "are shown this once and never again.\n"
            f"  web:  {url}  username {self.username}  password {self.password}\n"
            f"  CLI:  echo {self.token} | offload login {url}"
        )


async def create_first_admin(db: Database) -> FirstAdmin | None:
    """The first site admin with a password and a token, if the database has no user yet;
    None otherwise (also when another server created it a moment ago)."""
    users = Users(db)
    if await users.count() > 0:
        return None
    password = passwords.generate()
    try:
        user = await users.create(USERNAME, site_admin=True, password=password)
    except NameTaken:
        return None
    _, token = await AccessTokens(db).create(
        user.id, ["user:all", "site-admin"], note="created on first start"
    )
    return FirstAdmin(user.username, password, token)
