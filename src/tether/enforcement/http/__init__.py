"""The HTTP enforcement point: Envoy's ext_authz and nginx ``auth_request`` ask Tether whether
an HTTP request may pass (served at ``/v1/ext_authz/<service>/<path>`` by
:mod:`tether.api.routes.ext_authz`).

* :mod:`.paths` — request targets decoded once, path tricks refused;
* :mod:`.models` — services, routes, path templates and resource templates, as values;
* :mod:`.routes` — the route map: loaded from TOML, matched against a request.

All of it is pure: no web framework, no I/O but reading the route file once at start.
"""
