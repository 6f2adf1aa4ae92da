"""Helpers for tests and demos: shape-faithful tiny variants of the catalog models."""
