"""The front doors: each decodes its own wire format and calls the job service.

One module per front door; each imports ``sandboxd.service`` and never
another front door (tests/unit/test_layering.py keeps it so).
"""
