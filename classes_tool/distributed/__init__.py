"""Campaigns on a Ray cluster: the same work units as one process, run by Ray actors, stored by
the driver alone (`ray_executor`). Nothing here is imported unless a campaign asks for workers
or a cluster address, so a single-process campaign never imports Ray."""
