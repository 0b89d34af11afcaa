"""The pure core: CoinAPI records, sequence checks, order books, trade dedup, events, controls.

Sans-I/O in the h11 sense: no trio, no sockets, no clock (times are passed in), no logging on a
hot path. Plain values in, decisions out; tested with unit and property tests, no event loop.
"""
