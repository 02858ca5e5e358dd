"""runtime-agent: a self-hosted serverless function runtime."""

__version__ = "0.1.0"
