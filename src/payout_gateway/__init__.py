"""payout-gateway: one GraphQL API in front of two payout providers."""

__version__ = "0.1.0"
