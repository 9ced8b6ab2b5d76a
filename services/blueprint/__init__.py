"""Blueprint: a system-design guide turned into a running gRPC service mesh."""
