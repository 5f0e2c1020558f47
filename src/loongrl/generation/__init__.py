"""Generation: how a model is called, for every stage that calls one.

- ``backends``: transformers, OpenAI-compatible HTTP and vLLM behind one ``generate`` interface;
  ``SamplingConfig``; ``make_backend(spec)``
- ``http``: the one OpenAI-compatible HTTP client (whole-request deadline, retries with backoff, the
  server's detail in every error, secrets kept out of messages)
- ``sample``: K samples per item scored by a scorer the caller passes in (filter, mining, evaluation)
- ``models``: ``loongrl model fetch`` (ready model folders in a cache outside the repository)
- ``memory_agent``: MemAgent's memory agent (chunked reading, a rewritten memory, an answer from it) as a
  wrapper of any backend, so inputs longer than the window can be read
- ``serve``: ``transformers serve`` as a child process (tests, benchmarks)

It imports nothing from the floors above it (data, rewards, train, eval).
"""
