"""`dic term`: look up, validate, relate, expand and translate codes; convert units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer

from dic.cli.app import app, settings
from dic.cli.output import console, print_json, print_rows
from dic.errors import InputError

term_app = typer.Typer(help="Terminology: ICD-10-GM, OPS, ATC, LOINC, ORPHAcodes and UCUM.", no_args_is_help=True)
app.add_typer(term_app, name="term")

SYSTEM_HELP = "Code system: URI or alias (icd10gm, ops, atc, loinc, orpha, ucum)."


def _show(result: Any, rows: list[list[Any]], title: str) -> None:
    if settings.json:
        print_json(result.as_parameters() if hasattr(result, "as_parameters") else result)
    else:
        print_rows(["field", "value"], rows, title=title)


@term_app.command("systems")
def systems() -> None:
    """Every code system with its URI, accepted versions and concept count."""
    from dic.terminology import UCUM, code_system, system_declarations

    rows = []
    for d in system_declarations():
        count = None if d.uri == UCUM else len(code_system(d.uri).concepts)
        versions = f"{d.versions[0]}–{d.versions[-1]}" if d.versions else "any"
        rows.append([d.name, d.uri, versions, count, d.source])
    if settings.json:
        print_json([dict(zip(["name", "uri", "versions", "concepts", "source"], r, strict=True)) for r in rows])
    else:
        print_rows(["name", "uri", "versions", "concepts", "source"], rows, title="Code systems")


@term_app.command("lookup")
def lookup(system: str = typer.Argument(..., help=SYSTEM_HELP), code: str = typer.Argument(...)) -> None:
    """A code's display, kind, parent, children and properties ($lookup)."""
    from dic.terminology import lookup as lookup_code

    r = lookup_code(system, code)
    rows = [["system", r.system], ["code", r.code], ["display", r.display], ["kind", r.kind],
            ["parent", ", ".join(r.parents)], ["children", ", ".join(r.children)]]
    rows += [[f"designation ({lang})", value] for lang, value in r.designations]
    rows += [[name, value] for name, value in r.properties]
    if r.mark:
        rows.append(["mark", r.mark])
    _show(r, rows, f"{r.name} {r.code}")


@term_app.command("validate")
def validate(system: str = typer.Argument(..., help=SYSTEM_HELP), code: str = typer.Argument(...),
             display: str = typer.Option(None, "--display", help="Check this display text too."),
             version: str = typer.Option(None, "--version", help="The code system version.")) -> None:
    """Whether a code (and display) is valid ($validate-code)."""
    from dic.terminology import validate_code

    r = validate_code(system, code, display=display, version=version)
    _show(r, [["valid", r.valid], ["display", r.display], ["message", r.message]], f"{system} {code}")


@term_app.command("subsumes")
def subsumes(system: str = typer.Argument(..., help=SYSTEM_HELP), code_a: str = typer.Argument(...),
             code_b: str = typer.Argument(...)) -> None:
    """How A relates to B: equivalent, subsumes, subsumed-by or not-subsumed ($subsumes)."""
    from dic.terminology import subsumes as subsumption

    r = subsumption(system, code_a, code_b)
    if settings.json:
        print_json(r.as_parameters())
    else:
        console.print(f"{code_a} {r.value} {code_b}", highlight=False)


@term_app.command("expand")
def expand(file: Path = typer.Argument(None, help="A FHIR ValueSet JSON file to expand."),
           include: list[str] = typer.Option(None, "--include", help="SYSTEM|CODE to include (repeatable)."),
           is_a: bool = typer.Option(False, "--is-a", help="Include each --include code with its descendants.")) -> None:
    """Expand a ValueSet ($expand): from FILE, or from --include SYSTEM|CODE [--is-a]."""
    from dic.terminology import expand as expand_value_set

    if file is not None:
        if not file.is_file():
            raise InputError(f"{file}: no such file")
        try:
            value_set = orjson.loads(file.read_bytes())
        except orjson.JSONDecodeError as error:
            raise InputError(f"{file}: not JSON: {error}") from error
    elif include:
        value_set = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [
            _include(text, is_a) for text in include]}}
    else:
        raise InputError("give a ValueSet FILE or at least one --include SYSTEM|CODE")
    result = expand_value_set(value_set)
    if settings.json:
        print_json(result)
        return
    contains = result["expansion"]["contains"]
    print_rows(["system", "code", "display"], [[c["system"], c["code"], c["display"]] for c in contains],
               title=f"{result['expansion']['total']} codes")


def _include(text: str, is_a: bool) -> dict[str, Any]:
    system, _, code = text.rpartition("|")
    if not system or not code:
        raise InputError(f"--include takes SYSTEM|CODE, e.g. icd10gm|G35 (got {text!r})")
    if is_a:
        return {"system": system, "filter": [{"property": "concept", "op": "is-a", "value": code}]}
    return {"system": system, "concept": [{"code": code}]}


@term_app.command("translate")
def translate(system: str = typer.Argument(..., help=SYSTEM_HELP), code: str = typer.Argument(...),
              concept_map: str = typer.Option(None, "--map", help="ConceptMap URL (default: every shipped map).")) -> None:
    """Map a code to other systems with the shipped ConceptMaps ($translate)."""
    from dic.terminology import translate as translate_code

    r = translate_code(concept_map, system, code)
    if settings.json:
        print_json(r.as_parameters())
    elif not r.matches:
        console.print(r.message or "no match", highlight=False)
    else:
        print_rows(["equivalence", "system", "code", "display", "map"],
                   [[m.equivalence, m.system, m.code, m.display, m.source] for m in r.matches], title=f"{system} {code}")


@term_app.command("convert")
def convert(value: float = typer.Argument(...), unit: str = typer.Argument(..., help="UCUM unit of VALUE."),
            to: str = typer.Option(..., "--to", help="UCUM unit to convert to."),
            loinc: str = typer.Option(None, "--loinc", help="LOINC code (molar mass for mol <-> g).")) -> None:
    """Convert a value between UCUM units."""
    from dic.terminology import convert as convert_value

    result = convert_value(value, unit, to, loinc)
    if settings.json:
        print_json({"value": result, "unit": to, "from": {"value": value, "unit": unit}})
    else:
        console.print(f"{value:g} {unit} = {result:g} {to}", highlight=False)
