"""Loopback stand-ins for the remote services rat7m talks to (figshare), for offline tests."""
