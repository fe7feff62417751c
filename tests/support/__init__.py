"""What the tests share: constants, small helpers, stand-in servers and checks (fixtures live in conftest.py).

No test module imports another test module; whatever two of them need lives here."""
