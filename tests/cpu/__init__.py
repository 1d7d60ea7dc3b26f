"""Tests of the CPU backend's internals: intrinsics, blocks, tiles, threads, paths forced."""
