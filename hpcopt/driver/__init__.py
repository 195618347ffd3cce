"""The driver: runs a campaign's trials through an engine into the store."""
