"""Test harness: a real agent process and a real gRPC client."""
