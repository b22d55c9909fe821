"""A real local facility (JupyterHub, proxy, single-user servers) for the demo and the tests.

``facility.LocalFacility`` runs it, ``driver.HubDriver`` drives activity through the Hub API,
``spawner.ProfileSpawner`` is the spawner the hub loads, ``scenario`` is what the demo does
and ``run`` runs it with the collector watching (``af-metrics demo``).
"""
