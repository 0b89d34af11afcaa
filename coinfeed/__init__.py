"""coinfeed: a CoinAPI market-data feed handler on Trio: bounded, self-repairing, observable."""

__version__ = "0.1.0"
