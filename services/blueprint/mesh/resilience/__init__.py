"""Policies that keep a caller standing when its callees are not: each decides, the router acts."""
