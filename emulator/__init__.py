"""A local stand-in for Adobe IMS, AEP and CJA HTTP APIs (development and tests)."""
