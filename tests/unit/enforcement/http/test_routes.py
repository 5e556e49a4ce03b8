"""Route maps: loaded strictly, matched exactly, the most specific route winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.enforcement.http.paths import parse_target
from tether.enforcement.http.routes import RouteMap
from tether.errors import InvalidRouteMap, UnsafePath
from tether.policy.models import EntityRef

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "ext_authz" / "routes.toml"

MAP = """
[services.shop]
audience = "https://shop.acme.org"

[[services.shop.routes]]
method = "GET"
path = "/orders/{id}"
action = "read"
resource = { type = "Table", id = "orders/{id}", parent = "shop", data_class = "confidential" }

[[services.shop.routes]]
method = "GET"
path = "/orders/export"
action = "read"
resource = { type = "Api", id = "export" }

[[services.shop.routes]]
method = "*"
path = "/orders/{id}"
action = "write"
resource = { type = "Table", id = "orders/{id}" }

[[services.shop.routes]]
method = ["GET", "HEAD"]
path = "/files/{rest:path}"
action = "read"
resource = { type = "Api", id = "files/{rest}" }

[[services.shop.routes]]
method = "GET"
path = "/"
action = "read"
resource = { type = "Api", id = "home" }
"""


@pytest.fixture
def routes() -> RouteMap:
    return RouteMap.from_toml(MAP)


def resolve(routes: RouteMap, method: str, target: str) -> tuple[str, EntityRef] | None:
    found = routes.match("shop", method, parse_target(target))
    return None if found is None else (found.action, found.resource.ref)


def test_a_parameter_fills_the_resource_id_and_the_arguments(routes: RouteMap) -> None:
    found = routes.match("shop", "GET", parse_target("/orders/a%20b?x=1"))
    assert found is not None
    assert found.resource.ref == EntityRef("Table", "orders/a b")
    assert found.resource.parents == (EntityRef("Database", "shop"),)
    assert dict(found.resource.attrs) == {"name": "orders/a b", "data_class": "confidential"}
    assert found.arguments == {"method": "GET", "path": "/orders/a b",
                               "params": {"id": "a b"}, "query": "x=1"}  # fmt: skip


def test_a_literal_segment_beats_a_parameter(routes: RouteMap) -> None:
    assert resolve(routes, "GET", "/orders/export") == ("read", EntityRef("Api", "export"))


def test_a_named_method_beats_any_method(routes: RouteMap) -> None:
    assert resolve(routes, "GET", "/orders/7") == ("read", EntityRef("Table", "orders/7"))
    assert resolve(routes, "DELETE", "/orders/7") == ("write", EntityRef("Table", "orders/7"))


def test_a_tail_takes_the_rest_of_the_path(routes: RouteMap) -> None:
    assert resolve(routes, "HEAD", "/files/a/b.pdf") == ("read", EntityRef("Api", "files/a/b.pdf"))
    assert resolve(routes, "GET", "/files") is None  # a tail takes one segment at least
    assert resolve(routes, "GET", "/files/a/") is None  # and no empty one


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/files/a"),  # the method is not the route's
        ("GET", "/Orders/7"),  # matching is case-sensitive
        ("GET", "/orders/7/items"),  # no route is a prefix of another
        ("GET", "/orders/"),  # a trailing '/' is another path
        ("GET", "/orders"),
        ("get", "/files/a"),  # methods are upper case
    ],
)
def test_a_request_no_route_takes_matches_nothing(
    routes: RouteMap, method: str, target: str
) -> None:
    assert resolve(routes, method, target) is None


def test_root_and_unknown_service(routes: RouteMap) -> None:
    assert resolve(routes, "GET", "/") == ("read", EntityRef("Api", "home"))
    assert routes.match("other", "GET", parse_target("/")) is None
    assert routes.services["shop"].audience == "https://shop.acme.org"


def test_a_parameter_cannot_reach_another_routes_resource(routes: RouteMap) -> None:
    """One segment never holds a '/': ``/orders/{id}`` cannot name ``orders/x/y``."""
    assert resolve(routes, "GET", "/orders/x/y") is None
    with pytest.raises(UnsafePath):
        parse_target("/orders/x%2Fy")


def test_the_example_route_file_loads() -> None:
    example = RouteMap.from_file(EXAMPLE)
    found = example.match("orders", "DELETE", parse_target("/orders/42"))
    assert found is not None
    assert found.action == "delete"


ROUTE = 'method = "GET"\npath = "/a"\naction = "read"\nresource = { type = "Api", id = "a" }\n'


def one(old: str = "", new: str = "") -> str:
    """A file of one service ``s1`` with ``ROUTE``, ``old`` replaced by ``new`` once."""
    return "[[services.s1.routes]]\n" + ROUTE.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[services.Bad]\n", "services.Bad"),
        ("[services.ok-name]\nroutes = []\n", "services.ok-name.routes"),
        ("other = 1\n" + one(), "routes: other: not a key"),
        (one() + "extra = 1\n", "services.s1.routes[0].extra"),
        ('[[services.s1.routes]]\nmethod = "GET"\n', "services.s1.routes[0].action"),
        (one("read", "call_tool"), "[0].action"),
        (one("GET", "get"), "[0].method"),
        (one('"GET"', '["*"]'), "[0].method"),
        (one("Api", "Tool"), "[0].resource.type"),
        (one('"/a"', '"a"'), "[0].path"),
        (one("/a", "/a/../b"), "[0].path"),
        (one("/a", "/a//b"), "[0].path"),
        (one("/a", "/a%2Fb"), "[0].path"),
        (one("/a", "/{x:path}/b"), "[0].path"),
        (one("/a", "/{x}/{x}"), "[0].path"),
        (one("/a", "/v{x}"), "[0].path"),
        (one('id = "a"', 'id = "{y}"'), "[0].resource.id"),
        (one('id = "a"', 'id = "a}"'), "[0].resource.id"),
        (one("read", "query"), "[0].action"),
        (one(" }", ', parent = "db" }'), "[0].resource.parent"),
        (one(" }", ', data_class = "secret" }'), "[0].resource.data_class"),
        ('[services.s1]\naudience = "a b"\n' + one(), "services.s1.audience"),
        ("services = [", "routes"),
    ],
)
def test_a_route_file_that_breaks_a_rule_names_where(text: str, where: str) -> None:
    with pytest.raises(InvalidRouteMap, match=r".") as refused:
        RouteMap.from_toml(text)
    assert where in refused.value.message
    assert refused.value.code == "route_map_invalid"


def test_two_routes_that_would_tie_are_refused() -> None:
    tied = one() + one()
    with pytest.raises(InvalidRouteMap, match=r"routes\[1\]: matches the same requests"):
        RouteMap.from_toml(tied)
    renamed = one("/a", "/{x}") + one("/a", "/{y}")
    with pytest.raises(InvalidRouteMap, match="matches the same requests"):
        RouteMap.from_toml(renamed)


def test_the_same_path_for_different_methods_is_no_tie() -> None:
    both = one() + one("GET", "POST")
    assert len(RouteMap.from_toml(both).services["s1"].routes) == 2


def test_a_refusal_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "orders.toml"
    path.write_text(one("read", "call_tool"))
    with pytest.raises(InvalidRouteMap, match=r"^orders\.toml: services\.s1\.routes\[0\]\.action"):
        RouteMap.from_file(path)


def test_an_unreadable_route_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRouteMap, match="cannot read"):
        RouteMap.from_file(tmp_path / "missing.toml")
    binary = tmp_path / "routes.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidRouteMap, match="UTF-8"):
        RouteMap.from_file(binary)
