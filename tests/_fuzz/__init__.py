"""Property-based fuzzing of the public API (see :mod:`_fuzz.harness`)."""
