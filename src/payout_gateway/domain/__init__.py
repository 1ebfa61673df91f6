"""Pure domain: the unified model, canonical enums and the error tree (stdlib + pydantic only)."""
