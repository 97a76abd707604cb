"""Readers and writers of input and output files: the one layer that knows file formats; each
reader checks what it reads and names the file in every error."""
