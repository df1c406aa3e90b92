"""Tests start Azurite with the same launcher as the demo."""

from devhost.azurite import Azurite, start_azurite

__all__ = ["Azurite", "start_azurite"]
