"""Running the whole mesh on one machine: `blueprint up` and what it leaves for other commands."""
