"""Adapters: the only code that talks to Azure (or its local stand-ins)."""
