"""ops-tasks: Invoke/Fabric tasks that drive rented GPU pods over SSH."""

__version__ = "0.1.0"
