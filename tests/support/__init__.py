"""Test support, in one place: what more than one test module needs to run the receiver.

- ``kafka_broker``: the real Kafka broker process (also the ``scripts/kafka_broker.py`` CLI);
- ``kafka``: the session's broker fixture, a topic prefix per test, reading a topic back;
- ``server``: ``run_receiver``, a real ``receiver serve`` process on a free port;
- ``ready``: ``wait_ready`` and ``ready_client``, the one wait for ``/readyz``;
- ``publisher``: ``MemoryPublisher``, a ``Publisher`` without a broker.
"""
