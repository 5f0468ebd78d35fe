"""VCF 4.x files (.vcf, .vcf.gz, .bcf) to MII molecular-genetics "Variante" Observations.

    read_vcf(path) -> Iterator[SourceResource | Rejection]
    is_vcf_file(path) -> bool

One Observation per sample and ALT allele the sample's genotype carries (0/1, 1/1, 1/2, phased
too; 0/0 and no-calls give none): code LOINC 69548-6, value LA9633-4 "Present", specimen
`Specimen/<sample id>` and NO subject (the DIC attaches the patient from the stored biobank
Specimen). Components (LOINC, as in the HL7 genomics-reporting IG the MII profile builds on): gene
(INFO GENE, HGNC symbol), c.HGVS (INFO HGVSC), p.HGVS (INFO HGVSP), dbSNP id (ID column), chromosome,
coordinate system (1-based), start-end, REF, ALT, allelic state (heterozygous, homozygous,
hemizygous for one allele), the ALT allele's read depth and its fraction of all reads (FORMAT AD),
and the reference assembly (##reference or the contigs' assembly). Observation.id is a hash of
sample, CHROM, POS, REF and ALT: a reload gives the same ids. Codes and rules: `vcf.yaml`.

Checking: htslib accepts most malformed files of the hts-specs suite and stops at a record it
cannot parse, so every text line is checked first (`vcf_check`); a bad line becomes a Rejection at
"line N" and pysam reads the header plus the good lines (from a temporary copy when there were bad
ones). A broken header refuses the file: one Rejection. A BCF file is binary and read by pysam alone;
a record it cannot parse rejects the rest of the file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pysam

from dic.errors import InputError
from dic.sources.fhir_files import RAW_LIMIT_BYTES
from dic.sources.record import Rejection, SourceResource
from dic.sources.vcf_check import Header, check_header, load_rules

_SUFFIXES = (".vcf", ".vcf.gz", ".bcf")
_LOINC = "http://loinc.org"


def is_vcf_file(path: Path) -> bool:
    """Whether `path` is a file named .vcf, .vcf.gz or .bcf."""
    path = Path(path)
    return path.is_file() and path.name.lower().endswith(_SUFFIXES)


def read_vcf(path: Path) -> Iterator[SourceResource | Rejection]:
    """The Variante Observations of one VCF file and a Rejection per bad record (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.name.lower().endswith(".bcf"):
        yield from _map(path, str(path), None, None)
        return
    checked = _check_lines(path)
    if isinstance(checked, Rejection):
        yield checked
        return
    header, header_text, rejections, good = checked
    bad_lines = {int(r.position.split()[1]) for r in rejections}
    pending = iter(rejections)
    next_rejection = next(pending, None)
    if not bad_lines:
        records = _map(path, str(path), header, [n for n, _ in good])
    else:
        records = _map_clean_copy(path, header, header_text, good)
    for record in records:
        line = int(record.position.split()[1]) if record.position.startswith("line ") else 0
        while next_rejection is not None and int(next_rejection.position.split()[1]) < line:
            yield next_rejection
            next_rejection = next(pending, None)
        yield record
    if next_rejection is not None:
        yield next_rejection
    yield from pending


def _open_text(path: Path) -> Any:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _reject(source: str, position: str, reason: str, raw: bytes) -> Rejection:
    return Rejection(source, position, reason, raw[:RAW_LIMIT_BYTES], len(raw))


def _check_lines(path: Path) -> Rejection | tuple[Header, list[str], list[Rejection], list[tuple[int, str]]]:
    """The header, its text, the bad records' rejections and the good data lines (number, text)."""
    source = str(path)
    header_lines: list[tuple[int, str]] = []
    rejections: list[Rejection] = []
    good: list[tuple[int, str]] = []
    header: Header | None = None
    try:
        with _open_text(path) as stream:
            for number, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    if header is None:
                        return _reject(source, f"line {number}", "the header is not valid UTF-8; file not read", raw)
                    rejections.append(_reject(source, f"line {number}", "not valid UTF-8", raw))
                    continue
                text = line.rstrip("\r\n")
                if not line.endswith("\n") and header is None:
                    return _reject(source, f"line {number}", "header: the last line has no line end; file not read",
                                   raw)
                if header is None:
                    header_lines.append((number, text))
                    if not text.startswith("#") or text.startswith("#CHROM"):
                        checked = check_header(header_lines)
                        if isinstance(checked, tuple):
                            at, reason = checked
                            return _reject(source, f"line {at}", f"header: {reason}; file not read",
                                           "\n".join(t for _, t in header_lines).encode())
                        header = checked
                    continue
                if not text.strip():
                    continue
                if not line.endswith("\n") and not header.lenient_end:
                    rejections.append(_reject(source, f"line {number}", "the last line has no line end "
                                              "(a truncated file?)", raw))
                    continue
                problem = header.check_record(text.split("\t"))
                if problem:
                    rejections.append(_reject(source, f"line {number}", problem, raw))
                else:
                    good.append((number, text))
    except (OSError, EOFError) as error:  # a broken gzip stream
        return _reject(source, "file", f"cannot be read: {error}", b"")
    if header is None:
        return _reject(source, "line 1", "header: no #CHROM line; file not read",
                       "\n".join(t for _, t in header_lines).encode())
    return header, [t for _, t in header_lines], rejections, good


def _map_clean_copy(path: Path, header: Header, header_text: list[str],
                    good: list[tuple[int, str]]) -> Iterator[SourceResource | Rejection]:
    handle, name = tempfile.mkstemp(suffix=".vcf")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as copy:
            copy.write("\n".join(header_text) + "\n")
            copy.writelines(text + "\n" for _, text in good)
        yield from _map(Path(name), str(path), header, [n for n, _ in good])
    finally:
        os.unlink(name)


def _map(path: Path, source: str, header: Header | None, lines: list[int] | None,
         ) -> Iterator[SourceResource | Rejection]:
    """pysam's records of `path` as Observations; `lines` are the source line numbers of the records."""
    verbosity = pysam.set_verbosity(0)  # htslib's warnings on stderr say what our rejections say
    try:
        try:
            variants = pysam.VariantFile(str(path))
        except (OSError, ValueError) as error:
            yield _reject(source, "file", f"pysam cannot open it: {error}", b"")
            return
        with variants:
            assembly = _assembly(variants.header)
            count = 0
            iterator = iter(variants)
            while True:
                position = f"line {lines[count]}" if lines is not None and count < len(lines) else f"record {count + 1}"
                try:
                    record = next(iterator)
                except StopIteration:
                    break
                except (OSError, ValueError) as error:
                    rest = len(lines) - count if lines is not None else "the rest of the"
                    yield _reject(source, position, f"pysam cannot parse this record ({error}); {rest} record(s) "
                                  "from here on not read", b"")
                    break
                count += 1
                for observation in _observations(record, assembly):
                    yield SourceResource(observation, source, position)
    finally:
        pysam.set_verbosity(verbosity)


def _assembly(header: Any) -> dict[str, str] | None:
    assemblies = load_rules()["assemblies"]
    texts = [r.value for r in header.records if r.key == "reference" and r.value]
    texts += [c.header_record.get("assembly") or "" for c in header.contigs.values()]
    for text in texts:
        for name, answer in assemblies.items():
            if name.lower() in text.lower():
                return answer
    return None


@cache
def _concept(name: str) -> dict[str, Any]:
    code = load_rules()["loinc"][name]
    return {"coding": [{"system": _LOINC, "code": code["code"], "display": code["display"]}]}


def _component(name: str, **value: Any) -> dict[str, Any]:
    return {"code": _concept(name), **value}


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


def _info_text(record: Any, key: str) -> str | None:
    if key not in record.header.info:
        return None
    value = record.info.get(key)
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value if v is not None) or None
    return str(value) if value not in (None, "", ".") else None


def _observations(record: Any, assembly: dict[str, str] | None) -> Iterator[dict[str, Any]]:
    alts = record.alts or ()
    if not alts or "GT" not in record.format:
        return
    rules = load_rules()
    shared = _shared_components(record, assembly, rules)
    has_ad = "AD" in record.format
    for sample, call in record.samples.items():
        genotype = call.get("GT") or ()
        carried = sorted({a for a in genotype if a is not None and a > 0})
        if not carried:
            continue
        depths = call.get("AD") if has_ad else None
        for index in carried:
            alt = alts[index - 1]
            if alt in ("*", "<*>", "<NON_REF>") or index > len(alts):
                continue  # a spanning deletion or a gVCF's "any other allele": no variant of this record
            components = [*shared, _component("alt", valueString=alt),
                          _component("allelic_state", valueCodeableConcept=_concept(_zygosity(genotype, index)))]
            if depths is not None and index < len(depths) and depths[index] is not None:
                reads = depths[index]
                components.append(_component("read_depth", valueQuantity={"value": reads}))
                total = sum(d for d in depths if d is not None)
                if total:
                    components.append(_component("allele_frequency", valueQuantity={
                        "value": round(reads / total, 4), "system": "http://unitsofmeasure.org", "code": "1"}))
            key = "\x1f".join((sample, record.chrom, str(record.pos), record.ref, alt))
            yield {"resourceType": "Observation", "id": "var-" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest(),
                   "meta": {"profile": [rules["profile"]]}, "status": "final",
                   "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                             "code": "laboratory"}]}],
                   "code": _concept("variant"), "valueCodeableConcept": _concept("present"),
                   "specimen": {"reference": f"Specimen/{_safe_id(sample)}"}, "component": components}


def _zygosity(genotype: tuple[int | None, ...], index: int) -> str:
    if len(genotype) == 1:
        return "hemizygous"
    return "homozygous" if all(a == index for a in genotype) else "heterozygous"


def _shared_components(record: Any, assembly: dict[str, str] | None, rules: dict[str, Any]) -> list[dict[str, Any]]:
    """The components every Observation of a record has, whatever the sample and allele."""
    systems, found = rules["systems"], []
    gene = _info_text(record, "GENE")
    if gene:
        found.append(_component("gene", **_coded(systems["gene"], gene)))
    for key, name in (("HGVSC", "hgvs_c"), ("HGVSP", "hgvs_p")):
        text = _info_text(record, key)
        if text:
            found.append(_component(name, **_coded(systems["hgvs"], text)))
    for identifier in (record.id or "").split(";"):
        if identifier.startswith("rs"):
            found.append(_component("dbsnp", **_coded(systems["dbsnp"], identifier)))
    chromosome = record.chrom.removeprefix("chr")
    answer = rules["chromosomes"].get(chromosome)
    found.append(_component("chromosome", valueCodeableConcept={
        "coding": [{"system": _LOINC, "code": answer, "display": f"Chromosome {chromosome}"}]} if answer
        else {"text": record.chrom}))
    found.append(_component("coordinates", valueCodeableConcept=_concept("one_based")))
    found.append(_component("start_end", valueRange={"low": {"value": record.pos},
                                                      "high": {"value": record.pos + len(record.ref) - 1}}))
    found.append(_component("ref", valueString=record.ref))
    if assembly is not None:
        found.append(_component("assembly", valueCodeableConcept={"coding": [{"system": _LOINC, **assembly}]}))
    return found


def _safe_id(value: str) -> str:
    """A sample id as a FHIR id: itself when valid, else a stable hash of it."""
    if 0 < len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "-.") for c in value):
        return value
    return "h-" + hashlib.blake2b(value.encode(), digest_size=16).hexdigest()
