"""Authentication and authorisation: the OAuth2 authorization server for partner systems, people's
accounts and roles, and the FastAPI dependencies every route uses to check token and scope."""
