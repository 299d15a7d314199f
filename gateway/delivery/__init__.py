"""Delivery: MX resolution, SMTP transport, retries and bounces."""
