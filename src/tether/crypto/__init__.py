"""The safe-recipes layer: keys, JWK parsing, JWT mint and verify, the X.509 CA.

The only package in Tether that imports a JOSE library or ``cryptography``'s hazardous parts.
"""
