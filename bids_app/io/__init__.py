"""Readers and writers of image files: the one layer that knows file formats."""
