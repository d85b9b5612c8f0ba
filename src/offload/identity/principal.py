"""The principal: who is calling, and in which namespaces they may act."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from offload.identity.orgs import Role

Scope = Literal["user:all", "site-admin"]
SCOPES: tuple[Scope, ...] = ("user:all", "site-admin")


@dataclass(frozen=True)
class Principal:
    """A signed-in user as one request sees them: a token's scopes narrow what they may do."""

    user_id: int
    username: str
    # A site admin whose token (if any) carries the site-admin scope.
    site_admin: bool
    orgs: Mapping[str, Role] = field(default_factory=dict)
    # How they authenticated: a token, or a browser session (which needs a CSRF token to write).
    via: Literal["token", "session"] = "token"
    csrf_token: str = ""

    def may_act_in(self, namespace: str) -> bool:
        """Whether they may read and act on what `namespace` owns."""
        return self.site_admin or namespace == self.username or namespace in self.orgs

    def may_admin_org(self, org: str) -> bool:
        """Whether they may manage `org`'s members and secrets."""
        return self.site_admin or self.orgs.get(org) == "admin"

    def namespaces(self) -> list[str]:
        """Their own namespace and their organizations' (site admins: these, not all)."""
        return [self.username, *sorted(self.orgs)]
