"""Stage 6, observe: what the servers say about themselves (counter probes, cold-state gate) and the
watch on the whole stack during a round."""
