"""Generation: how a model is called, for every stage that calls one.

- ``backends``: transformers, OpenAI-compatible HTTP and vLLM behind one ``generate`` interface;
  ``SamplingConfig``; ``make_backend(spec)``
- ``http``: the OpenAI-compatible client core (retries, backoff, secrets kept out of messages)
- ``sample``: K samples per row scored by a scorer the caller passes in (mining, filtering, evaluation)

It imports nothing from the floors above it (data, rewards, train, eval).
"""
