"""Audiences as code: the spec model, the limits it is checked against, the refresh calendar."""
