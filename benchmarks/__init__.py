"""trioserver's benchmarks: ``python -m benchmarks`` (``make bench``); ``--help`` for options.

Sections: ``roundtrip`` (calls/s and latency against the alternatives), ``budget`` (the price
of time limits), ``awaiting`` (handlers that await another task), ``casts`` (fire and forget,
until done), ``instrument`` (the price of a no-op instrument), ``statistics`` (the price of a
read), ``memory`` (bytes per idle server), ``overload`` (bursts and sustained overload, on
virtual time), ``profile`` (where a round trip's time goes), ``waiting`` (what guarded calls,
released blocks and cycle detection cost, and what they buy), ``durable`` (durable casts
against in-memory ones), ``porcupine`` (the linearizability checker on Porcupine's histories,
against Porcupine's own checker when ``go`` is on PATH) and ``ray`` (servers in Ray actors
against a raw Ray call; it needs Ray, in the dev extra, and is skipped without it). The report
ends with the issues' targets, met or not.
"""
