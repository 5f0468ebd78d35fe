"""The reference evaluator beyond the official suite: errors, schema, coercion, keys, nesting."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dic.errors import DefinitionError, Problem
from dic.views.evaluator import ViewColumn, coerce_value, evaluate_view, view_columns
from dic.views.fhirpath import FhirPath, reference_key
from dic.views.view_definition import ViewDefinition

PATIENTS = [
    {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "name": [{"family": "A", "given": ["a1", "a2"]}, {"family": "B", "use": "official"}],
    },
    {"resourceType": "Patient", "id": "p2", "active": False, "name": [{"family": "C"}]},
    {"resourceType": "Patient", "id": "p3"},
    {"resourceType": "Observation", "id": "o1"},
]


def view(**raw) -> ViewDefinition:
    return ViewDefinition.model_validate({"resource": "Patient", **raw})


def rows(definition: ViewDefinition, resources: list[dict] = PATIENTS) -> list[dict]:
    return list(evaluate_view(definition, resources))


def test_a_column_that_is_not_a_collection_must_not_yield_several_values() -> None:
    definition = view(
        name="names",
        select=[{"column": [{"name": "id", "path": "id"}, {"name": "family", "path": "name.family"}]}],
    )
    with pytest.raises(DefinitionError) as caught:
        rows(definition)
    assert caught.value.source == "names"
    assert caught.value.problems == [
        Problem(
            "/select/0/column/1",
            "'name.family' gave 2 values for Patient/p1, but column 'family' is not a collection: "
            'add first() to the path or set "collection": true',
        )
    ]


def test_a_failing_path_names_the_column_and_the_resource() -> None:
    definition = view(select=[{"column": [{"name": "x", "path": "id.substring('x')"}]}])
    with pytest.raises(DefinitionError) as caught:
        rows(definition)
    assert caught.value.problems[0].path == "/select/0/column/0"
    assert caught.value.problems[0].message.startswith("failed on Patient/p1: 'id.substring('x')': ")


def test_rows_come_in_column_order_with_other_resource_types_skipped() -> None:
    definition = view(
        select=[
            {
                "forEachOrNull": "name",
                "column": [
                    {"name": "family", "path": "family"},
                    {"name": "given", "path": "given", "collection": True},
                    {"name": "n", "path": "%rowIndex", "type": "integer"},
                ],
            },
            {"column": [{"name": "id", "path": "getResourceKey()"}]},
        ]
    )
    result = rows(definition)
    assert [list(r) for r in result] == [["family", "given", "n", "id"]] * 4
    assert result == [
        {"family": "A", "given": ["a1", "a2"], "n": 0, "id": "Patient/p1"},
        {"family": "B", "given": [], "n": 1, "id": "Patient/p1"},
        {"family": "C", "given": [], "n": 0, "id": "Patient/p2"},
        {"family": None, "given": [], "n": 0, "id": "Patient/p3"},
    ]


def test_for_each_or_null_over_nothing_nulls_nested_selects_and_unions() -> None:
    definition = view(
        select=[
            {"column": [{"name": "id", "path": "id"}]},
            {
                "forEachOrNull": "contact",
                "select": [{"forEach": "telecom", "column": [{"name": "system", "path": "system"}]}],
                "unionAll": [
                    {"column": [{"name": "u", "path": "'a'"}]},
                    {"column": [{"name": "u", "path": "'b'"}]},
                ],
            },
        ]
    )
    assert rows(definition, PATIENTS[2:3]) == [{"id": "p3", "system": None, "u": None}]


def test_where_keeps_a_resource_only_when_every_path_is_true() -> None:
    definition = view(
        select=[{"column": [{"name": "id", "path": "id"}]}],
        where=[{"path": "active"}, {"path": "name.where(use = 'official').exists()"}],
    )
    assert rows(definition) == [{"id": "p1"}]
    not_boolean = view(
        select=[{"column": [{"name": "id", "path": "id"}]}], where=[{"path": "name.family.first()"}]
    )
    assert rows(not_boolean) == []


def test_repeat_walks_depth_first_with_row_index() -> None:
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": "q",
        "item": [
            {"linkId": "1", "item": [{"linkId": "1.1"}], "answer": [{"item": [{"linkId": "1.a"}]}]},
            {"linkId": "2"},
        ],
    }
    definition = ViewDefinition.model_validate(
        {
            "resource": "QuestionnaireResponse",
            "select": [
                {
                    "repeat": ["item", "answer.item"],
                    "column": [
                        {"name": "link", "path": "linkId"},
                        {"name": "i", "path": "%rowIndex", "type": "integer"},
                    ],
                }
            ],
        }
    )
    assert rows(definition, [response]) == [
        {"link": "1", "i": 0},
        {"link": "1.1", "i": 1},
        {"link": "1.a", "i": 2},
        {"link": "2", "i": 3},
    ]


def test_view_columns_follow_select_then_nested_then_union() -> None:
    definition = view(
        select=[
            {
                "column": [{"name": "a", "path": "id", "type": "id"}],
                "select": [{"column": [{"name": "b", "path": "active", "type": "boolean"}]}],
                "unionAll": [
                    {"column": [{"name": "c", "path": "name.given", "collection": True, "type": "string"}]},
                    {"column": [{"name": "c", "path": "name.family", "collection": True, "type": "string"}]},
                ],
            },
            {"column": [{"name": "d", "path": "%rowIndex", "type": "integer"}]},
        ]
    )
    assert view_columns(definition) == [
        ViewColumn("a", "id", False),
        ViewColumn("b", "boolean", False),
        ViewColumn("c", "string", True),
        ViewColumn("d", "integer", False),
    ]


@pytest.mark.parametrize(
    ("value", "fhir_type", "expected"),
    [
        (Decimal(2), "integer", 2),
        (Decimal("2.5"), "decimal", 2.5),
        (Decimal(3), None, 3.0),
        (True, "boolean", True),
        ("2020-01", "date", "2020-01"),
        (None, "integer", None),
        (7, "positiveInt", 7),
    ],
)
def test_coerce_value(value: object, fhir_type: str | None, expected: object) -> None:
    coerced = coerce_value(value, fhir_type)
    assert coerced == expected
    assert type(coerced) is type(expected)


def test_constants_and_decimal_columns() -> None:
    observation = {"resourceType": "Observation", "id": "o", "valueQuantity": {"value": 1.50}}
    definition = ViewDefinition.model_validate(
        {
            "resource": "Observation",
            "constant": [{"name": "limit", "valueDecimal": 1.2}],
            "select": [
                {
                    "column": [
                        {"name": "v", "path": "value.ofType(Quantity).value", "type": "decimal"},
                        {"name": "over", "path": "value.ofType(Quantity).value > %limit", "type": "boolean"},
                        {
                            "name": "low",
                            "path": "value.ofType(Quantity).value.lowBoundary()",
                            "type": "decimal",
                        },
                    ]
                }
            ],
        }
    )
    assert rows(definition, [observation]) == [{"v": 1.5, "over": True, "low": 1.45}]


@pytest.mark.parametrize(
    ("reference", "resource_type", "key"),
    [
        ("Patient/p1", None, "Patient/p1"),
        ("https://fhir.example.org/fhir/Patient/p1", None, "Patient/p1"),
        ("Patient/p1/_history/2", "Patient", "Patient/p1"),
        ("Patient/p1", "Observation", None),
        ("#contained", None, None),
        ("urn:uuid:1234", None, None),
    ],
)
def test_reference_key(reference: str, resource_type: str | None, key: str | None) -> None:
    assert reference_key(reference, resource_type) == key


def test_reference_keys_in_fhirpath() -> None:
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "subject": {"reference": "http://x/fhir/Patient/p1/_history/3"},
    }
    assert FhirPath("subject.getReferenceKey()").values(encounter) == ["Patient/p1"]
    assert FhirPath("subject.getReferenceKey(Patient)").values(encounter) == ["Patient/p1"]
    assert FhirPath("subject.getReferenceKey(Group)").values(encounter) == []
    assert FhirPath("getResourceKey()").values(encounter) == ["Encounter/e1"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("birthDate.lowBoundary()", ["1970-01-01"]),
        ("birthDate.highBoundary()", ["1970-12-31"]),
        ("deceased.ofType(dateTime).lowBoundary()", ["2001-02-03T04:05:00.000+01:00"]),
        ("deceased.ofType(dateTime).highBoundary()", ["2001-02-03T04:05:59.999+01:00"]),
    ],
)
def test_boundaries(path: str, expected: list) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "birthDate": "1970",
        "deceasedDateTime": "2001-02-03T04:05+01:00",
    }
    assert FhirPath(path).values(patient) == expected
