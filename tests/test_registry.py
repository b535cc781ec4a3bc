"""The one registry pattern every extension point uses (uniroute_core.registry)."""

import threading

import pytest

from uniroute_core.registry import DuplicateNameError, Registry, UnknownNameError


def test_register_as_decorator_and_call_returns_the_object():
    reg: Registry[object] = Registry("widget")

    @reg.register("square")
    class Square:
        pass

    def circle() -> str:
        return "o"

    assert reg.register("circle", circle) is circle
    assert reg.get("square") is Square and reg.get("circle") is circle
    assert reg.names() == ("square", "circle")  # registration order
    assert list(reg) == ["square", "circle"] and len(reg) == 2
    assert "square" in reg and "triangle" not in reg and 3 not in reg
    assert reg.items() == (("square", Square), ("circle", circle))


def test_unknown_name_is_a_key_error_listing_the_known_names():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    reg.register("b", 2)
    with pytest.raises(KeyError) as info:
        reg.get("c")
    err = info.value
    assert isinstance(err, UnknownNameError)
    assert str(err) == "unknown widget 'c'; known widgets: 'a', 'b'"
    assert err.name == "c" and err.known == ("a", "b")
    empty: Registry[int] = Registry("gadget")
    with pytest.raises(UnknownNameError, match=r"\(none registered\)"):
        empty.get("x")


def test_a_taken_name_needs_replace_but_re_registering_the_same_object_is_harmless():
    reg: Registry[object] = Registry("widget")
    one, two = object(), object()
    reg.register("x", one)
    reg.register("x", one)  # same object again: no-op (repeated imports)
    with pytest.raises(DuplicateNameError, match="widget 'x' is already registered"):
        reg.register("x", two)
    assert reg.get("x") is one
    reg.register("x", two, replace=True)
    assert reg.get("x") is two
    assert reg.unregister("x") is two and "x" not in reg
    with pytest.raises(UnknownNameError):
        reg.unregister("x")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_names_must_be_non_empty_strings(bad):
    reg: Registry[int] = Registry("widget")
    with pytest.raises(TypeError, match="non-empty string"):
        reg.register(bad, 1)


def test_concurrent_registration_keeps_every_entry():
    reg: Registry[int] = Registry("widget")

    def add(start: int) -> None:
        for i in range(start, start + 200):
            reg.register(f"w{i}", i)

    threads = [threading.Thread(target=add, args=(k * 200,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg) == 800 and all(reg.get(f"w{i}") == i for i in range(800))
