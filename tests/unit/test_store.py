"""PolicyStore: safe YAML loading, per-key last-good policies, name conflicts, atomic swaps."""

from __future__ import annotations

import json

import pytest

from app.engine.policyset import PolicySet
from app.policy.model import PolicyError
from app.sources.documents import MAX_DOCUMENTS, SourceError, compile_source, load_documents
from app.sources.store import ErrorTracker, PolicyStore
from tests.unit.builders import policy_doc, policy_yaml


def _pol(name: str) -> str:
    return policy_yaml(name, annotations={f"example.com/{name}": "1"})


def _names(store: PolicyStore) -> list[str]:
    return sorted(store.current().by_name)


def _apply(store: PolicyStore, key: str, text: str | None) -> str | None:
    """One key changed (None: removed), as a source reports it; its error, if any."""
    return store.replace_all({key: text}, full=False).get(key)


# --- loading one source ---------------------------------------------------------------------------


def test_multi_document_file_gives_every_policy_with_its_source() -> None:
    store = PolicyStore()
    text = _pol("one") + "---\n" + _pol("two") + "---\n"  # a trailing empty document is ignored
    assert store.replace_all({"many.yaml": text}) == {}
    assert _names(store) == ["one", "two"]
    assert {p.source for p in store.current().by_name.values()} == {"many.yaml"}


def test_json_source_is_accepted() -> None:
    store = PolicyStore()
    assert store.replace_all({"one.json": json.dumps(policy_doc("one"))}) == {}
    assert _names(store) == ["one"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param(
            'a: &a ["lol", "lol"]\nb: &b [*a, *a]\nc: [*b, *b]\n',
            "aliases (*anchor) are not allowed",
            id="alias-bomb",
        ),
        pytest.param(
            _pol("one").replace("metadata: {name: one}", "metadata: &m {name: one}") + "x: *m\n",
            "aliases",
            id="alias-in-a-policy",
        ),
        pytest.param(
            "!!python/object/apply:os.system ['true']\n", "could not determine a constructor", id="python-tag"
        ),
        pytest.param("spec: [\n", "not valid YAML", id="broken-yaml"),
        pytest.param("[" * 20000, "nested too deeply", id="deep-nesting"),
        pytest.param("- 1\n- 2\n", "document 1: expected a mapping", id="list-document"),
        pytest.param("just text\n", "document 1: expected a mapping", id="scalar-document"),
        pytest.param(
            _pol("one") + "---\n" + policy_yaml("two", bogus=1),
            "document 2: policy 'two': spec.bogus: unknown field",
            id="second-document-names-its-index",
        ),
        pytest.param(
            _pol("one") + "---\n" + _pol("one"),
            "document 2: policy 'one' is already defined by document 1",
            id="duplicate-in-a-file",
        ),
        pytest.param(
            policy_yaml("tpl", sidecars=[{"name": "s", "image": "busybox:{{ params.tag "}]),
            "policy 'tpl': spec.sidecars[0].image: template syntax error",
            id="template-syntax-error",
        ),
    ],
)
def test_bad_source_is_refused_with_a_message(text: str, words: str) -> None:
    store = PolicyStore(max_bytes=1024 * 1024)
    errors = store.replace_all({"bad.yaml": text})
    assert words in errors["bad.yaml"], errors
    assert store.errors() == errors
    assert len(store.current()) == 0


def test_file_over_the_size_limit_is_refused_before_parsing() -> None:
    store = PolicyStore(max_bytes=1024)
    text = _pol("big") + "# " + "x" * 2000 + "\n"
    error = _apply(store, "big.yaml", text)
    assert error is not None
    assert f"{len(text.encode())} bytes is over the 1024-byte limit" in error
    assert len(store.current()) == 0


def test_size_limit_counts_bytes_not_characters() -> None:
    text = "a: " + "é" * 600 + "\n"  # 604 characters, 1204 bytes
    with pytest.raises(PolicyError, match="1204 bytes is over the 1024-byte limit"):
        load_documents(text, max_bytes=1024)


def test_too_many_documents() -> None:
    text = "---\n".join(["a: 1\n"] * (MAX_DOCUMENTS + 1))
    with pytest.raises(PolicyError, match=f"{MAX_DOCUMENTS + 1} documents; at most {MAX_DOCUMENTS}"):
        load_documents(text, max_bytes=1024 * 1024)
    assert (
        len(load_documents("---\n".join(["a: 1\n"] * MAX_DOCUMENTS), max_bytes=1024 * 1024)) == MAX_DOCUMENTS
    )


def test_compile_source_records_the_key_as_source() -> None:
    [policy] = compile_source("configmap podgraft/policies log.yaml", _pol("log"), max_bytes=4096)
    assert policy.source == "configmap podgraft/policies log.yaml"
    assert policy.name == "log"


# --- several keys ---------------------------------------------------------------------------------


def test_invalid_key_keeps_its_last_good_policies_while_other_keys_update() -> None:
    store = PolicyStore()
    assert store.replace_all({"a.yaml": _pol("alpha"), "b.yaml": _pol("beta")}) == {}
    before = store.current()
    errors = store.replace_all({"a.yaml": "spec: [\n", "b.yaml": _pol("beta") + "---\n" + _pol("gamma")})
    assert set(errors) == {"a.yaml"}
    assert "not valid YAML" in errors["a.yaml"]
    assert _names(store) == ["alpha", "beta", "gamma"]
    assert store.current().by_name["alpha"] is before.by_name["alpha"]
    assert store.errors() == errors
    # Fixing the file clears its error.
    assert _apply(store, "a.yaml", _pol("alpha2")) is None
    assert store.errors() == {}
    assert _names(store) == ["alpha2", "beta", "gamma"]


def test_duplicate_name_across_keys_first_key_wins_and_error_names_both() -> None:
    store = PolicyStore()
    first = policy_yaml("shared", annotations={"example.com/from": "a"})
    second = policy_yaml("shared", annotations={"example.com/from": "b"})
    errors = store.replace_all({"b.yaml": second, "a.yaml": first})
    winner = store.current().by_name["shared"]
    assert winner.source == "a.yaml"
    assert winner.model.spec.annotations == {"example.com/from": "a"}
    assert set(errors) == {"b.yaml"}
    assert "'shared'" in errors["b.yaml"]
    assert "a.yaml" in errors["b.yaml"]
    assert store.errors() == errors


def test_a_conflict_clears_once_the_winning_key_is_removed() -> None:
    store = PolicyStore()
    store.replace_all({"a.yaml": _pol("shared"), "b.yaml": _pol("shared")})
    _apply(store, "a.yaml", None)
    assert store.current().by_name["shared"].source == "b.yaml"
    assert store.errors() == {}, "b.yaml's policy is in force: its conflict error is stale"


def test_a_parse_error_is_not_hidden_by_a_conflict() -> None:
    store = PolicyStore()
    store.replace_all({"a.yaml": _pol("shared"), "b.yaml": _pol("shared")})
    error = _apply(store, "b.yaml", "spec: [\n")
    assert error is not None
    assert "not valid YAML" in error
    assert "not valid YAML" in store.errors()["b.yaml"]


def test_remove_drops_the_key_and_its_error() -> None:
    store = PolicyStore()
    store.replace_all({"a.yaml": _pol("alpha"), "b.yaml": _pol("beta")})
    _apply(store, "b.yaml", "spec: [\n")
    _apply(store, "b.yaml", None)
    assert _names(store) == ["alpha"]
    assert store.errors() == {}
    assert store.current().by_name["alpha"].source == "a.yaml"
    _apply(store, "never-existed.yaml", None)  # harmless
    assert _names(store) == ["alpha"]


def test_replace_all_full_drops_vanished_keys_and_marks_synced() -> None:
    store = PolicyStore()
    assert not store.synced
    store.replace_all({"a.yaml": _pol("alpha"), "b.yaml": "spec: [\n"}, full=False)
    assert not store.synced
    store.replace_all({"c.yaml": _pol("gamma")})
    assert store.synced
    assert _names(store) == ["gamma"]
    assert store.errors() == {}, "b.yaml vanished from the full listing: its error with it"


def test_replace_all_partial_keeps_other_keys_and_none_removes() -> None:
    store = PolicyStore()
    store.replace_all({"a.yaml": _pol("alpha"), "b.yaml": _pol("beta")})
    store.replace_all({"c.yaml": _pol("gamma")}, full=False)
    assert _names(store) == ["alpha", "beta", "gamma"]
    store.replace_all({"a.yaml": None}, full=False)
    assert _names(store) == ["beta", "gamma"]


def test_a_policy_error_value_is_recorded_and_keeps_the_last_good_version() -> None:
    store = PolicyStore()
    store.replace_all({"a.yaml": _pol("alpha")})
    errors = store.replace_all({"a.yaml": PolicyError("cannot read the file: permission denied")})
    assert errors == {"a.yaml": "cannot read the file: permission denied"}
    assert store.errors() == errors
    assert _names(store) == ["alpha"]


def test_readers_keep_the_set_they_got_and_on_change_sees_every_swap() -> None:
    seen: list[tuple[list[str], dict[str, str]]] = []

    def on_change(policies: PolicySet, errors: dict[str, str]) -> None:
        seen.append((sorted(policies.by_name), errors))

    store = PolicyStore(on_change=on_change)
    _apply(store, "a.yaml", _pol("alpha"))
    held = store.current()
    _apply(store, "b.yaml", _pol("beta"))
    _apply(store, "b.yaml", "spec: [\n")
    assert sorted(held.by_name) == ["alpha"]
    assert store.current() is not held
    assert [names for names, _ in seen] == [["alpha"], ["alpha", "beta"], ["alpha", "beta"]]
    assert list(seen[-1][1]) == ["b.yaml"]


def test_error_tracker_reports_each_error_once_and_again_after_a_fix() -> None:
    tracker = ErrorTracker()
    assert tracker.fresh({"k": "bad"}, {"k": "bad"}) == {"k": "bad"}
    assert tracker.fresh({"k": "bad"}, {"k": "bad"}) == {}
    assert tracker.fresh({"k": "worse"}, {"k": "worse"}) == {"k": "worse"}
    assert tracker.fresh({}, {}) == {}  # fixed
    assert tracker.fresh({"k": "worse"}, {"k": "worse"}) == {"k": "worse"}


def test_every_problem_of_a_source_is_reported_at_once_each_naming_its_document() -> None:
    text = "---\n".join(
        [
            _pol("one"),
            policy_yaml("two") + "  initContainerPosition: middle\n",
            "{}\n",
            _pol("one"),
            policy_yaml("tpl", sidecars=[{"name": "s", "image": "busybox:{{ params.tag "}]),
        ]
    )
    with pytest.raises(SourceError) as caught:
        compile_source("p.yaml", text, max_bytes=1 << 20)
    problems = [str(problem) for problem in caught.value.problems]
    assert [problem.document for problem in caught.value.problems] == [2, 3, 4, 5]
    assert [problem.split(":")[0] for problem in problems] == [
        "document 2",
        "document 3",
        "document 4",
        "document 5",
    ]
    assert "spec.initContainerPosition" in problems[0]
    assert "already defined by document 1" in problems[2]
    assert "policy 'tpl'" in problems[3]
    assert str(caught.value) == "; ".join(problems)


# --- the Kubernetes schema of what a policy injects, at load --------------------------------------


def test_a_policy_the_apiserver_would_refuse_never_goes_live_and_the_last_good_version_stays() -> None:
    store = PolicyStore(kubernetes_version="1.30")
    key = "configmap podgraft/policies key log.yaml"
    volumes = [{"name": "logs", "hostPath": {"path": "/var/log"}}]
    good = policy_yaml("log", volumes=volumes, volumeMounts=[{"name": "logs", "mountPath": "/logs"}])
    assert store.replace_all({key: good}) == {}
    in_force = store.current().by_name["log"]
    errors = store.replace_all({key: good.replace("hostPath", "hostPth")}, full=False)
    assert errors == {
        key: "document 1: policy 'log': spec.volumes[0].hostPth: unknown field in Kubernetes 1.30; "
        "did you mean 'hostPath'?"
    }
    assert store.current().by_name["log"] is in_force


def test_the_store_checks_against_the_kubernetes_version_it_is_given() -> None:
    text = policy_yaml(
        "stop", sidecars=[{"name": "s", "image": "b:1", "lifecycle": {"stopSignal": "SIGUSR1"}}]
    )
    assert PolicyStore(kubernetes_version="v1.33.1").replace_all({"p.yaml": text}) == {}
    errors = PolicyStore(kubernetes_version="1.32").replace_all({"p.yaml": text})
    assert (
        "spec.sidecars[0].lifecycle.stopSignal: unknown field in Kubernetes 1.32 (added in 1.33)"
        in (errors["p.yaml"])
    )


def test_the_webhook_store_has_the_settings_version() -> None:
    from app.server import create_app
    from app.settings import Settings

    text = policy_yaml(
        "stop", sidecars=[{"name": "s", "image": "b:1", "lifecycle": {"stopSignal": "SIGUSR1"}}]
    )
    for version, refused in (("1.32", True), ("1.34", False)):
        store = create_app(Settings(kubernetes_version=version)).state.runtime.store
        assert bool(store.replace_all({"p.yaml": text})) == refused
