"""Readers of input files: each checks what it reads and names the file in every error."""
