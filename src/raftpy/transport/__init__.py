"""Networking: framing, the handshake and client protocol, and the asyncio TCP transport."""
