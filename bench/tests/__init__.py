"""Unit tests of the benchmark's pure parts (``pytest bench/tests``)."""
