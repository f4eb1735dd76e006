"""What the tests share besides fixtures: invented lyrics, CLI helpers and loopback servers.

pyproject's pytest settings put tests/ on sys.path, so every test imports these as `support.…`
(from the source tree and from `make test`'s temporary folder alike); tests/conftest.py holds only
fixtures and hooks.
"""
