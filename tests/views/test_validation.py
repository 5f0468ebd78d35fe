"""validate_view: every problem of an invalid view at once, each at its JSON pointer."""

from __future__ import annotations

import copy
import json
from importlib.resources import files

import pytest

from dic.errors import DefinitionError, Problem
from dic.views.validation import validate_view
from dic.views.view_definition import ViewDefinition

VALID = {
    "resourceType": "ViewDefinition",
    "name": "patient_names",
    "resource": "Patient",
    "constant": [{"name": "use", "valueCode": "official"}],
    "select": [
        {"column": [{"name": "id", "path": "getResourceKey()"}]},
        {"forEach": "name.where(use = %use)", "column": [{"name": "family", "path": "family"}]},
    ],
    "where": [{"path": "active"}],
}


def _problems(raw: dict, source: str = "views/test.json") -> list[Problem]:
    with pytest.raises(DefinitionError) as caught:
        validate_view(raw, source)
    assert caught.value.source == source
    return caught.value.problems


def test_a_valid_view_parses_into_the_model() -> None:
    view = validate_view(copy.deepcopy(VALID))
    assert isinstance(view, ViewDefinition)
    assert view.select[1].forEach == "name.where(use = %use)"
    assert view.constant[0].value == "official"


def test_every_problem_is_reported_with_its_pointer() -> None:
    raw = {
        "resource": "Patient",
        "constant": [{"name": "use"}, {"name": "2bad", "valueString": "x", "valueCode": "y"}],
        "select": [
            {
                "column": [
                    {"name": "id", "path": "id"},
                    {"name": "last name", "path": "name.family.first()"},
                    {"name": "given", "path": "name.given.frist()"},
                ]
            },
            {"forEach": "name", "forEachOrNull": "contact", "column": [{"name": "id", "path": "'x'"}]},
            {"forEach": 1},
            {
                "unionAll": [
                    {"column": [{"name": "a", "path": "id"}, {"name": "b", "path": "%usee"}]},
                    {"column": [{"name": "b", "path": "name.("}, {"name": "a", "path": "id"}]},
                ]
            },
        ],
        "where": [{"path": "name.family"}, {"path": "active"}],
    }
    assert _problems(raw) == [
        Problem("/select/2/forEach", "Input should be a valid string (got int)"),
        Problem("/constant/0", "a constant needs exactly one value[x] element (found none)"),
        Problem("/constant/1/name", "'2bad' is not a valid name (^[A-Za-z][A-Za-z0-9_]*$)"),
        Problem(
            "/constant/1", "a constant needs exactly one value[x] element (found valueString, valueCode)"
        ),
        Problem("/select/0/column/1/name", "'last name' is not a valid name (^[A-Za-z][A-Za-z0-9_]*$)"),
        Problem("/select/0/column/2/path", "unknown function 'frist()'. Did you mean 'first()'?"),
        Problem(
            "/select/1", "forEach and forEachOrNull cannot be combined in one select; nest a select instead"
        ),
        Problem("/select/3/unionAll/0/column/1/path", "unknown constant '%usee'. Did you mean '%use'?"),
        Problem(
            "/select/3/unionAll/1/column/0/path",
            "'name.(': syntax error at column 6: mismatched input '(' expecting "
            "{'is', 'as', 'in', 'contains', '$this', '$index', '$total', IDENTIFIER, DELIMITEDIDENTIFIER}",
        ),
        Problem(
            "/select/3/unionAll/1",
            "unionAll branches need the same columns in the same order: ['b', 'a'] differs from ['a', 'b']",
        ),
        Problem("/select", "column name 'id' is used more than once in the view's output"),
        Problem("/where/0/path", "a where path must yield a boolean, but 'name.family' yields string"),
    ]


def test_the_error_message_names_source_pointer_and_fix() -> None:
    raw = copy.deepcopy(VALID)
    raw["select"][0]["column"].append({"name": "given", "path": "name.given.frist()"})
    with pytest.raises(DefinitionError) as caught:
        validate_view(raw, "views/standard/patient.json")
    assert str(caught.value) == (
        "views/standard/patient.json: 1 problem(s)\n"
        "  /select/0/column/1/path: unknown function 'frist()'. Did you mean 'first()'?"
    )


def test_missing_and_unknown_resource() -> None:
    assert _problems({}) == [
        Problem("/resource", "required element 'resource' is missing"),
        Problem("/select", "required element 'select' is missing"),
    ]
    raw = copy.deepcopy(VALID)
    raw["resource"] = "Patinet"
    assert _problems(raw) == [
        Problem("/resource", "'Patinet' is not an R4 resource type. Did you mean 'Patient'?")
    ]


def test_not_an_object() -> None:
    assert _problems([1, 2]) == [Problem("", "a ViewDefinition is a JSON object, not list")]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("@@", "'@@': syntax error at column 1: token recognition error at: '@@'"),
        ("name family", "'name family': syntax error: unexpected 'family' at column 6"),
        ("", "'': empty expression"),
    ],
)
def test_fhirpath_that_does_not_parse(path: str, message: str) -> None:
    raw = copy.deepcopy(VALID)
    raw["select"][1]["column"][0]["path"] = path
    assert _problems(raw) == [Problem("/select/1/column/0/path", message)]


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        (
            "name.where(use = 'official')",
            "a where path must yield a boolean, but 'name.where(use = 'official')' yields HumanName",
        ),
        (
            "contact.name.family.first()",
            "a where path must yield a boolean, but 'contact.name.family.first()' yields string",
        ),
        ("Patient.birthDate", "a where path must yield a boolean, but 'Patient.birthDate' yields date"),
        ("active", None),
        ("name.exists() and gender = 'male'", None),
        ("(gender = 'male').not()", None),
        ("deceased.ofType(boolean)", None),  # a choice: the model does not tell, so it is allowed
        ("%rowIndex", None),
        ("deceased is boolean", None),
        ("deceased as boolean", None),
    ],
)
def test_where_must_be_boolean_where_the_model_says(where: str, problem: str | None) -> None:
    raw = copy.deepcopy(VALID)
    raw["where"] = [{"path": where}]
    if problem is None:
        assert validate_view(raw).where[0].path == where
    else:
        assert _problems(raw) == [Problem("/where/0/path", problem)]


def test_union_branches_may_repeat_names_and_nested_names_count_once() -> None:
    raw = {
        "resource": "Patient",
        "select": [
            {"column": [{"name": "id", "path": "id"}]},
            {
                "unionAll": [
                    {"forEach": "telecom", "column": [{"name": "tel", "path": "value"}]},
                    {"forEach": "contact.telecom", "column": [{"name": "tel", "path": "value"}]},
                ]
            },
            {"select": [{"column": [{"name": "tel", "path": "'x'"}]}]},
        ],
    }
    assert _problems(raw) == [
        Problem("/select", "column name 'tel' is used more than once in the view's output")
    ]
    raw["select"].pop()
    assert [c.name for c in validate_view(raw).select[1].unionAll[0].column] == ["tel"]


def test_repeat_with_foreach_and_empty_repeat() -> None:
    raw = {
        "resource": "QuestionnaireResponse",
        "select": [
            {"repeat": ["item"], "forEach": "answer", "column": [{"name": "a", "path": "linkId"}]},
            {"repeat": [], "column": [{"name": "b", "path": "linkId"}]},
        ],
    }
    assert _problems(raw) == [
        Problem("/select/0", "forEach and repeat cannot be combined in one select; nest a select instead"),
        Problem("/select/1/repeat", "repeat needs at least one path"),
    ]


def test_every_standard_view_is_valid() -> None:
    folder = files("dic.views").joinpath("standard")
    checked = 0
    for entry in folder.iterdir():
        if not entry.name.endswith(".json") or entry.name == "unions.json":
            continue
        view = validate_view(json.loads(entry.read_text()), f"views/standard/{entry.name}")
        assert view.select, entry.name
        checked += 1
    assert checked >= 20
