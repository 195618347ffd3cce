"""Search methods: ask/tell over the unit cube, pure (no Ray, no IO)."""
