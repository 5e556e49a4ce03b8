"""Just-in-time credentials: leases, the engines that create them, and the reaper that ends
them on time."""
