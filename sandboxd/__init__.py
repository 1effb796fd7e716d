"""sandboxd: run untrusted code in hardened single-use Linux containers, fast, with exact
resource accounting. See README.md and docs/."""

__version__ = "0.1.0"
