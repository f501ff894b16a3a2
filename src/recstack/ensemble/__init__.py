"""Blending, submission writers and their validators."""
