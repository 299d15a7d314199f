"""Test helpers shared across the test tree (real peers such as a DNS server)."""
