"""Tests of the CUDA backend that need no device and run in the main process:
PTX for sm_90, the runtime, the launch guard, and the test that starts the
simulator run of tests/cuda."""
