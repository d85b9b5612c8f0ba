"""Repository hosting: the registry of mirrored repositories, their mirrors, and git smart-HTTP."""
