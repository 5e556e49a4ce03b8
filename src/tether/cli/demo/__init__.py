"""``tether demo``: the seeds' three use cases played on the embedded defaults, with real parts
(see :mod:`tether.cli.demo.play`), and the example MCP servers it starts
(:mod:`tether.cli.demo.servers`)."""
