"""Blueprint: a system-design guide turned into a running gRPC service mesh."""

__version__ = "0.1.0"
