"""Hostile-input campaign against a real daemon: PDU fuzzing, stalled
connections and kill -9 durability (``make fuzz``, ``make soak``)."""
