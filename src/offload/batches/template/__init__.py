"""The Go-template language of batch specs (`${{ ... }}`): lexer, syntax, the engine that
renders, and the functions and formatting it offers."""
