"""The recording pipeline: prompts in, one evaluation point of scored answers out, handed to a
delivery sink.

- ``recorder``: ``Recorder``, framework-free; the Trainer callback is a thin layer over it.
- ``sources``: where a run's prompts come from (a dataset, a file, a prediction set).
- ``set_source``: the prompts of a prediction set, from the database or a server.
- ``estimate``: what recording will cost before a run starts.
"""
