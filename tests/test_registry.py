"""Tests for xai_bench.registry: registration, lookup messages, specs, lazy builtins, plugins."""

import importlib
import itertools
import sys
import textwrap
import types

import pytest

from xai_bench.registry import METHODS, METRICS, MODELS, Registry, RegistryError, UnknownNameError

_counter = itertools.count()


def fresh(kind="model", builtin_modules=()):
    """A registry whose entry-point group no installed distribution declares."""
    return Registry(kind, f"xai_bench_test.unused{next(_counter)}", builtin_modules)


@pytest.fixture
def reg():
    r = fresh()
    for name in ("bcos_vit_tiny", "bcos_vit_small", "vit_tiny", "resnet18"):
        r.add(name, lambda name=name: name)
    return r


# ---------------------------------------------------------------- registration
def test_register_decorator_and_add():
    r = fresh()

    @r.register()
    def alpha():
        return "a"

    @r.register("beta_v2", paper="Foo et al.", year=2024)
    class Beta:
        pass

    @r.register
    def gamma():
        return "g"

    r.add("delta", len, note="builtin")
    assert r.get("alpha") is alpha and r.get("beta_v2") is Beta and r.get("gamma") is gamma
    assert r.get("delta") is len
    assert r.meta("beta_v2") == {"paper": "Foo et al.", "year": 2024}
    assert r.meta("alpha") == {}
    assert r.names() == ["alpha", "beta_v2", "delta", "gamma"]
    assert list(r) == r.names() and len(r) == 4
    assert "alpha" in r and "Alpha" not in r and 3 not in r


def test_duplicate_name_is_an_error(reg):
    with pytest.raises(ValueError, match="model 'vit_tiny' is already registered"):
        reg.add("vit_tiny", object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("resnet18")(lambda: None)


@pytest.mark.parametrize("bad", ["", "a,b", "vit*", "all", "has space", None])
def test_reserved_or_invalid_names_rejected(bad):
    with pytest.raises(ValueError):
        fresh().add(bad, object)


# ---------------------------------------------------------------- listing & lookup
def test_glob_listing(reg):
    assert reg.list("bcos_*") == ["bcos_vit_small", "bcos_vit_tiny"]
    assert reg.list() == ["bcos_vit_small", "bcos_vit_tiny", "resnet18", "vit_tiny"]
    assert reg.list(["resnet*", "*tiny"]) == ["bcos_vit_tiny", "resnet18", "vit_tiny"]
    assert reg.list(("nothing*",)) == []
    assert reg.list("BCOS_*") == []  # case-sensitive


def test_unknown_name_suggests_close_matches(reg):
    with pytest.raises(UnknownNameError) as info:
        reg.get("bcos_vit_tinyy")
    msg = str(info.value)
    assert msg.startswith("unknown model 'bcos_vit_tinyy' — did you mean 'bcos_vit_tiny'")
    assert "\n" not in msg and not msg.startswith('"')
    assert isinstance(info.value, KeyError) and isinstance(info.value, RegistryError)


def test_unknown_name_several_suggestions_formatting():
    r = fresh()
    for name in ("vit_a", "vit_b", "vit_c", "vit_d"):
        r.add(name, object)
    msg = str(pytest.raises(UnknownNameError, r.get, "vit_").value)
    suggestions = msg.split(" — did you mean ")[1]
    assert suggestions.count("'vit_") == 3 and " or 'vit_" in suggestions and msg.endswith("?")


def test_unknown_name_without_suggestion(reg):
    with pytest.raises(UnknownNameError) as info:
        reg.get("zzzz")
    assert str(info.value) == ("unknown model 'zzzz'; run `xai-bench list models` "
                               "to see the available names")
    with pytest.raises(UnknownNameError):
        reg.meta("zzzz")


# ---------------------------------------------------------------- resolve
def test_resolve(reg):
    assert reg.resolve("resnet18") == ["resnet18"]
    assert reg.resolve("resnet18, bcos_*") == ["resnet18", "bcos_vit_small", "bcos_vit_tiny"]
    assert reg.resolve(["vit_tiny", "bcos_vit_tiny,*tiny"]) == ["vit_tiny", "bcos_vit_tiny"]
    assert reg.resolve("all") == reg.list()
    assert reg.resolve("resnet18,all")[0] == "resnet18" and len(reg.resolve("resnet18,all")) == 4
    assert reg.resolve("") == []


def test_resolve_errors(reg):
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        reg.resolve("vit_tiny,resnet19")
    with pytest.raises(RegistryError) as info:
        reg.resolve("foo*")
    assert str(info.value) == "no model matches 'foo*'"


# ---------------------------------------------------------------- lazy builtins
@pytest.fixture
def holder(monkeypatch, tmp_path):
    """A registry reachable from importable temp modules as ``_xai_reg_holder.REG``."""
    module_name = f"_xai_builtin_{next(_counter)}"
    r = fresh("method", (module_name, f"_xai_does_not_exist_{next(_counter)}.sub"))
    monkeypatch.setitem(sys.modules, "_xai_reg_holder", types.SimpleNamespace(REG=r))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield r, module_name, tmp_path
    sys.modules.pop(module_name, None)


def test_builtin_modules_are_imported_lazily_and_once(holder):
    r, module_name, tmp_path = holder
    (tmp_path / f"{module_name}.py").write_text(textwrap.dedent("""
        from _xai_reg_holder import REG

        @REG.register(kind="builtin")
        def saliency():
            return "saliency"

        # Querying the registry while it imports this module must not recurse.
        SEEN_DURING_IMPORT = REG.list()
    """))
    importlib.invalidate_caches()
    r.add("manual", object)  # registering does not trigger the builtin import
    assert module_name not in sys.modules
    assert r.list() == ["manual", "saliency"]  # the missing second module is ignored
    mod = sys.modules[module_name]
    assert mod.SEEN_DURING_IMPORT == ["manual", "saliency"]
    assert r.get("saliency") is mod.saliency and r.meta("saliency") == {"kind": "builtin"}
    assert "saliency" in r and sys.modules[module_name] is mod  # imported once


def test_builtin_module_with_missing_dependency_raises(holder):
    r, module_name, tmp_path = holder
    (tmp_path / f"{module_name}.py").write_text("import _xai_missing_dependency_zz\n")
    importlib.invalidate_caches()
    with pytest.raises(ModuleNotFoundError, match="_xai_missing_dependency_zz"):
        r.list()


# ---------------------------------------------------------------- entry-point plugins
GROUP = "xai_bench_test.methods"


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A fake installed distribution 'fakeplugin' declaring entry points in GROUP."""
    (tmp_path / "fakeplugin_mod.py").write_text("def good_method(x):\n    return x * 2\n")
    (tmp_path / "fakeplugin_broken.py").write_text(
        "raise ImportError('needs the optional dependency frobnicate')\n")
    dist = tmp_path / "fakeplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"""
        [{GROUP}]
        good = fakeplugin_mod:good_method
        broken = fakeplugin_broken:thing
        clash = fakeplugin_mod:good_method
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    for mod in ("fakeplugin_mod", "fakeplugin_broken"):
        sys.modules.pop(mod, None)
    yield tmp_path
    for mod in ("fakeplugin_mod", "fakeplugin_broken"):
        sys.modules.pop(mod, None)


def plugin_registry():
    r = Registry("method", GROUP, ())
    r.add("clash", str)
    r.add("gradcam", object)
    return r


def test_plugins_are_listed_without_importing(plugin_dist):
    r = plugin_registry()
    assert r.list() == ["broken", "clash", "good", "gradcam"]
    assert "good" in r and r.resolve("b*,good") == ["broken", "good"]
    assert "fakeplugin_mod" not in sys.modules and "fakeplugin_broken" not in sys.modules


def test_plugin_get_loads_on_demand(plugin_dist):
    r = plugin_registry()
    good = r.get("good")
    assert good(21) == 42 and r.get("good") is good and "fakeplugin_mod" in sys.modules
    assert r.meta("good") == {}


def test_broken_plugin_raises_one_line_registry_error(plugin_dist):
    r = plugin_registry()
    with pytest.raises(RegistryError) as info:
        r.get("broken")
    msg = str(info.value)
    assert msg == ("method plugin 'broken' (fakeplugin_broken:thing, from fakeplugin 0.1) failed "
                   "to load: "
                   "ImportError: needs the optional dependency frobnicate")
    assert isinstance(info.value.__cause__, ImportError)


def test_load_all_reports_failures_without_raising(plugin_dist):
    r = plugin_registry()
    problems = r.load_all()
    assert any("'broken'" in p and "failed to load" in p for p in problems)
    assert problems == r.problems
    assert r.get("good")(1) == 2  # the rest of the registry still works


def test_plugin_clashing_with_builtin_keeps_builtin(plugin_dist):
    r = plugin_registry()
    assert r.get("clash") is str
    assert any("'clash'" in p and "builtin" in p for p in r.problems)
    assert "fakeplugin_mod" not in sys.modules


def test_clash_detected_when_builtin_registered_after_discovery(plugin_dist):
    r = Registry("method", GROUP, ())
    r.list()
    assert r.problems == []
    r.add("good", str)
    assert r.get("good") is str and any("'good'" in p for p in r.problems)


# ---------------------------------------------------------------- globals
def test_global_registries():
    assert (MODELS.kind, MODELS.group, MODELS.builtin_modules) == (
        "model", "xai_bench.models", ("xai_bench.models",))
    assert (METHODS.kind, METHODS.group) == ("method", "xai_bench.methods")
    assert (METRICS.kind, METRICS.group) == ("metric", "xai_bench.metrics")
    assert METHODS.builtin_modules == ("xai_bench.methods",)
    assert METRICS.builtin_modules == ("xai_bench.metrics",)


def test_registry_module_is_light():
    # Importing the registry must not pull in torch (checked in a clean interpreter).
    import os
    import pathlib
    import subprocess

    import xai_bench

    root = str(pathlib.Path(xai_bench.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    code = "import sys, xai_bench.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    assert out.stdout.strip() == "False"


def test_a_builtin_package_is_walked_so_a_new_entry_is_one_file(tmp_path, monkeypatch):
    """With ``walk=True`` every module of the built-in package is imported and its declared
    entries registered: a new built-in method or metric needs no other file edited."""
    import sys
    import textwrap

    from xai_bench.registry import Registry

    pkg = tmp_path / "xb_walked"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "novel.py").write_text(textwrap.dedent("""
        import xai_bench

        @xai_bench.metric(higher_is_better=False, category="novelty")
        def novel(model, x, targets, maps):
            return maps.flatten(1).std(1)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert Registry("metric", "xb_walked.none", ("xb_walked",)).list() == []  # not walked
        walked = Registry("metric", "xb_walked.none", ("xb_walked",), walk=True)
        assert walked.list() == ["novel"]
        assert walked.card("novel").category == "novelty"
    finally:
        for name in [m for m in sys.modules if m.startswith("xb_walked")]:
            sys.modules.pop(name)


def test_the_default_metric_group_is_the_papers_seven_and_what_a_run_scores():
    import xai_bench
    from xai_bench.run.config import RunConfig

    paper = {"grid_pointing_game", "mask_localisation", "pixel_perturbation", "deletion",
             "insertion", "parameter_randomisation", "random_target"}
    assert set(xai_bench.METRICS.resolve("default")) == paper
    assert RunConfig().metrics == ["default"]
    everything = set(xai_bench.METRICS.resolve("all"))
    assert paper < everything and {"sparseness", "road", "smooth_mprt"} <= everything
    # a category and a declared group select alike; a name wins over a category of that name
    assert set(xai_bench.METRICS.resolve("robustness")) >= {"max_sensitivity"}
    assert xai_bench.METRICS.resolve("complexity") == ["complexity"]
    assert xai_bench.METRICS.card("deletion").groups == ("default",)
    with pytest.raises(ValueError, match="groups must be words"):
        xai_bench.metric("bad", higher_is_better=True, groups=("all",))(lambda *a: None)
