"""PostgreSQL front end of the bastion.

Sans-IO (bytes in, typed messages or events out; no sockets, no event loop):
``messages``, ``encoding``, ``decoding``, ``protocol``, ``front_door``,
``relay_scan``, ``tracker``, ``params``, ``query_log``, ``query_event``,
``upstream_login``, ``errors``. The asyncio adapters on top: ``front_end``
(what connections share), ``listener``, ``connection`` (the session core's
adapter), ``login``, ``upstream``, ``cancel``.
"""
