"""Rendering results: text for people, a JSON envelope and JSON lines for programs."""
