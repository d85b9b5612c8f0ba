"""Identity and access: users, organizations, tokens, sessions, and who may do what."""
