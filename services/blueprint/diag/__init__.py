"""Diagnostics: the mesh's test subject (echo, slow work, chosen failures, streams)."""
