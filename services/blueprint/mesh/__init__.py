"""The client-side service mesh: discovery, balancing, server runtime."""
