"""Pytest fixtures that start the emulator for tests (filled in by the emulator issue)."""
