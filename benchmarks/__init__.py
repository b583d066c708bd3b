"""trioserver's benchmarks: ``python -m benchmarks`` (``make bench``); ``--help`` for options.

Sections: ``roundtrip`` (calls/s and latency against the alternatives), ``budget`` (the price
of time limits), ``memory`` (bytes per idle server), ``overload`` (bursts and sustained
overload, on virtual time) and ``profile`` (where a round trip's time goes; run on demand).
"""
