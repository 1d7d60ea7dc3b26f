"""Tests of the public functions and LinearHead on every backend, and of the package's layering."""
